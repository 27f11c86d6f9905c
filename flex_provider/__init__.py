"""OpenAI Flex processing for Apache Airflow."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Admin > Providers links the package name here (without one, to an airflow.apache.org page that
# does not exist for a third-party provider).
DOCUMENTATION_URL = "https://github.com/flex-provider/airflow-provider-openai-flex#readme"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-provider-openai-flex",
        "name": "OpenAI Flex",
        "description": "Bulk LLM enrichment on OpenAI Flex processing: deferrable, checkpointed, flex-aware.",
        "versions": [__version__],
        # Airflow 3.3's ProvidersManager replaces this key with the distribution's
        # ``Project-URL: Documentation`` (pyproject ``[project.urls] Documentation``), None if absent.
        "documentation-url": DOCUMENTATION_URL,
        "extra-links": ["flex_provider.links.FlexResultsLink"],
        # The Flex tab and page (loaded from here when [core] lazy_discover_providers is False, else
        # from the "airflow.plugins" entry point: see flex_provider.plugins).
        "plugins": [{"name": "flex", "plugin-class": "flex_provider.plugins.FlexPlugin"}],
        "connection-types": [
            {
                "connection-type": "openai_flex",
                "hook-class-name": "flex_provider.hooks.flex.FlexHook",
                "hook-name": "OpenAI (Flex)",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"password": "API key", "host": "Base URL"},
                    "placeholders": {
                        "host": "https://api.openai.com/v1 (leave empty for OpenAI)",
                        "password": "sk-...",
                    },
                },
                "conn-fields": {
                    "organization": {"label": "Organization", "schema": {"type": ["string", "null"]}},
                    "project": {"label": "Project", "schema": {"type": ["string", "null"]}},
                },
            }
        ],
    }
