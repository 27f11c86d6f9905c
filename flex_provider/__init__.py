"""OpenAI Flex processing for Apache Airflow."""

from __future__ import annotations

__version__ = "0.1.0"


def get_provider_info() -> dict:
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
            }
        ],
    }
