"""The Flex pages: the hooks the browser tests rely on, self-contained assets (no internet needed),
relative URLs (Airflow under a base path), and how the plugin's app serves them."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from flex_provider import __version__
from flex_provider.plugins.pages import CSP, STATIC_DIR

COUNTERS = ("requests", "unavailable", "rate_limited", "fallbacks", "succeeded", "failed", "in_flight", "skipped")


class Elements(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))

    def by_id(self, element_id: str) -> tuple[str, dict[str, str | None]]:
        (match,) = [(tag, attrs) for tag, attrs in self.found if attrs.get("id") == element_id]
        return match


def _read(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def test_task_tab_has_every_hook() -> None:
    page = Elements(_read("task.html"))
    for element_id in ("flex-status", "flex-eta", "flex-updated", "flex-error"):
        page.by_id(element_id)
    _, attrs = page.by_id("flex-progress")
    assert "data-done" in attrs and "data-total" in attrs
    for name in COUNTERS:
        (counter,) = [a for _, a in page.found if a.get("data-counter") == name]
        assert "data-value" in counter
    for element_id in ("flex-cost-actual", "flex-cost-standard", "flex-cost-saved"):
        assert "data-value" in page.by_id(element_id)[1]
    for chart in ("flex-chart-progress", "flex-chart-429", "flex-chart-tiers"):
        assert page.by_id(chart)[0] == "svg"
    assert page.by_id("flex-failures")[0] == "table"
    assert "hidden" in page.by_id("flex-error")[1]  # shown only on errors
    for element_id in ("flex-controls", "flex-budget", "flex-deadline"):  # shown only for runs that set them
        assert "hidden" in page.by_id(element_id)[1]
    script = _read("task.js") + _read("common.js")
    assert "data.budget" in script and "data.deadline" in script
    assert 'dataset.loaded = "1"' in script
    assert '"data-failure-id": f.id' in script  # one row per failure: tr[data-failure-id]
    assert "class: `series series-${index}" in script  # chart lines: .series


def test_savings_page_has_every_hook() -> None:
    page = Elements(_read("savings.html"))
    assert page.by_id("flex-chart-savings")[0] == "svg"
    for element_id in ("flex-total-saved", "flex-total-spent"):
        assert "data-value" in page.by_id(element_id)[1]
    assert page.by_id("flex-runs")[0] == "table"
    page.by_id("flex-error")
    script = _read("savings.js")
    assert 'class: "bar"' in script  # one rect.bar per (night, DAG)
    assert '"data-run-id": r.run_id' in script
    assert 'dataset.loaded = "1"' in script


@pytest.mark.parametrize("name", sorted(p.name for p in STATIC_DIR.iterdir() if p.is_file()))
def test_assets_are_self_contained_and_relative(name: str) -> None:
    """No CDN and no absolute URL: the machines may have no internet, and Airflow may live under a
    base path (only the SVG namespace, an identifier, looks like a URL)."""
    text = _read(name)
    urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
    assert not urls, urls
    for ref in re.findall(r"""(?:src|href)=["']([^"']+)""", text):
        assert not ref.startswith(("/", "//")), ref
    for call in re.findall(r"""Flex\.api\(([^)]*)\)""", text):
        assert call == "ti.path" or call.lstrip("`\"'").startswith("../api/"), call
    assert ".innerHTML" not in text and "eval(" not in text  # data reaches the DOM as text only


@pytest.fixture(scope="module")
def app_client() -> TestClient:
    from flex_provider.plugins.app import create_app

    return TestClient(create_app())


def test_pages_and_assets_are_served(app_client: TestClient) -> None:
    for path in ("/ui/task?dag_id=d&run_id=r&task_id=t&map_index=-1", "/ui/savings"):
        response = app_client.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert response.headers["content-security-policy"] == CSP
        assert "{{version}}" not in response.text and f"?v={__version__}" in response.text
        for asset in re.findall(r'(?:src|href)="\.\./(static/[^"?]+)', response.text):
            served = app_client.get("/" + asset)
            assert served.status_code == 200, asset
    assert app_client.get("/static/common.js").headers["content-type"].startswith("text/javascript")
    assert app_client.get("/static/icon.svg").headers["content-type"].startswith("image/svg+xml")
    assert app_client.get("/ui/nothing").status_code == 404
    assert app_client.get("/static/../pages.py").status_code == 404


def test_every_static_file_is_used() -> None:
    """Nothing under static/ is left over: each file is referenced by a page or the plugin."""
    referenced = _read("task.html") + _read("savings.html")
    referenced += (STATIC_DIR.parent / "views.py").read_text() + (STATIC_DIR.parent / "pages.py").read_text()
    for path in STATIC_DIR.iterdir():
        assert path.name in referenced, path.name
