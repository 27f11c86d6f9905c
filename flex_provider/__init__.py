"""OpenAI Flex processing for Apache Airflow."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-provider-openai-flex",
        "name": "OpenAI Flex",
        "description": "Bulk LLM enrichment on OpenAI Flex processing: deferrable, checkpointed, flex-aware.",
        "versions": [__version__],
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
