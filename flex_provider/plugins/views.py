"""Where the plugin lives in the Airflow UI: the "Flex" task-instance tab and the "Flex" nav page.

Airflow 3.3's UI shows an external view with a ``url_route`` in an iframe whose ``src`` is the
``href`` as given (after replacing ``{DAG_ID}``... with URL-encoded values): a path starting with
``/`` is taken from the host's root, not from the UI's ``<base href>``. Behind a base path
(``[api] base_url = https://host/airflow``) the api-server mounts our app at ``/airflow/flex``, so
the hrefs carry that path too, read from the same setting the api-server uses for its root path.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

URL_PREFIX = "/flex"  # where the api-server mounts the plugin's FastAPI app
TAB_ROUTE = "flex"  # the task-instance tab: .../tasks/<task_id>/plugin/flex
PAGE_ROUTE = "flex-savings"  # the nav page: /plugin/flex-savings
TASK_PAGE = "/ui/task"
SAVINGS_PAGE = "/ui/savings"
ICON = "/static/icon.svg"
# The tab's page reads these back from its query string (the UI fills them in).
TASK_QUERY = "?dag_id={DAG_ID}&run_id={RUN_ID}&task_id={TASK_ID}&map_index={MAP_INDEX}"


def base_path(base_url: str | None = None) -> str:
    """The path part of ``[api] base_url`` without its trailing slash ("" when Airflow is at the root)."""
    if base_url is None:
        from airflow.configuration import conf

        base_url = conf.get("api", "base_url", fallback="") or ""
    return urlsplit(base_url).path.rstrip("/")


def external_views(base_url: str | None = None) -> list[dict[str, Any]]:
    """The two views, with hrefs under Airflow's base path."""
    root = base_path(base_url) + URL_PREFIX
    return [
        {
            "name": "Flex",
            "href": root + TASK_PAGE + TASK_QUERY,
            "destination": "task_instance",
            "url_route": TAB_ROUTE,
        },
        {
            "name": "Flex",
            "href": root + SAVINGS_PAGE,
            "destination": "nav",
            "url_route": PAGE_ROUTE,
            "nav_top_level": True,  # its own button in the left nav, not folded into "Plugins"
            "icon": root + ICON,
        },
    ]
