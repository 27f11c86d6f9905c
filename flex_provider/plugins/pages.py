"""The plugin's pages: ``/flex/ui/task`` (the task-instance tab) and ``/flex/ui/savings`` (the nav
page), plain HTML with their CSS and JavaScript under ``/flex/static``.

Self-contained (no CDN: deployments often have no internet) and served without authentication:
they hold no data. Their scripts fetch the JSON API, which checks the user, with the UI's cookie
(same origin: the UI embeds them in an iframe). The Content-Security-Policy lets them load only
their own files and talk only to this server.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, Response, status

from flex_provider import __version__

STATIC_DIR = Path(__file__).parent / "static"
PAGES = {"task": "task.html", "savings": "savings.html"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)

router = APIRouter(prefix="/ui")


@cache
def page_html(name: str) -> str:
    """A page's HTML, its asset URLs stamped with the provider's version (so a browser never keeps
    the scripts of an older release)."""
    return (STATIC_DIR / PAGES[name]).read_text(encoding="utf-8").replace("{{version}}", __version__)


def _page(name: str) -> Response:
    try:
        html = page_html(name)
    except OSError:  # a package built without its static files
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR, f"the Flex plugin's page {PAGES[name]} is missing from the package"
        ) from None
    return Response(
        html,
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/task", include_in_schema=False)
def task_page() -> Response:
    """The "Flex" tab: ``?dag_id=&run_id=&task_id=&map_index=`` (the UI fills them in)."""
    return _page("task")


@router.get("/savings", include_in_schema=False)
def savings_page() -> Response:
    """The "Flex" page in the navigation."""
    return _page("savings")
