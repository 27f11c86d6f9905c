"""The FastAPI app the api-server mounts at ``/flex``: the JSON API, the pages and their assets."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from flex_provider import __version__
from flex_provider.plugins import api, pages
from flex_provider.plugins.auth import share_auth_manager


def create_app() -> FastAPI:
    app = FastAPI(
        title="Flex (OpenAI Flex provider)",
        description="Live state and savings history of flex runs; every /api route checks Airflow permissions.",
        version=__version__,
        docs_url=None,
        redoc_url=None,
    )
    share_auth_manager(app)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR, check_dir=False), name="flex_static")
    return app
