"""The Flex plugin for the Airflow UI: a "Flex" tab on every task instance (the live state of its
flex run) and a "Flex" page in the navigation (savings and spend per night per DAG), served by a
FastAPI app the api-server mounts at ``/flex`` (see :mod:`flex_provider.plugins.api`).

**How it is registered.** Airflow 3.3 loads ``airflow.plugins`` entry points always, and the
``plugins`` of provider info only when ``[core] lazy_discover_providers`` is False. The provider
declares the plugin both ways, so it works out of the box and is listed with the provider; but a
plugin found twice is an error in Airflow's eyes (the api-server reports "already registered" as a
plugin import error; the task runner stops registering the remaining provider plugins). So the entry
point resolves to :class:`FlexPlugin` only when provider-info plugins are not loaded, and to
nothing (skipped silently) when they are: exactly one registration either way.

Importing this package is cheap (every Airflow process imports entry-point plugins): the app itself
is built by the api-server on the first request (:class:`~flex_provider.plugins.lazy_app.LazyApp`).
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from flex_provider.plugins.lazy_app import LazyApp
from flex_provider.plugins.views import URL_PREFIX, external_views

__all__ = ["FlexPlugin"]


class FlexPlugin(AirflowPlugin):
    """The "Flex" task-instance tab, the "Flex" nav page and the app at ``/flex`` behind them."""

    name = "flex"
    fastapi_apps = [
        {"app": LazyApp("flex_provider.plugins.app:create_app"), "url_prefix": URL_PREFIX, "name": "flex"},
    ]
    external_views = external_views()


def _provider_plugins_loaded() -> bool:
    """Does this process also load provider-info plugins (``lazy_discover_providers = False``)?"""
    from airflow import settings

    return not settings.LAZY_LOAD_PROVIDERS


def __getattr__(name: str) -> Any:
    # PEP 562: the ``airflow.plugins`` entry point ("flex_provider.plugins:entry_point_plugin") is
    # resolved when Airflow loads plugins, after its settings are read.
    if name == "entry_point_plugin":
        return None if _provider_plugins_loaded() else FlexPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
