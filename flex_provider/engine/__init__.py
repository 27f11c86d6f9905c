"""The flex engine: plain asyncio, no Airflow imports. See :class:`FlexEngine`.

The names below are loaded on first use (PEP 562), so that importing one small module of the
package (the emulator reads ``engine.pricing``) does not import the whole engine and the openai SDK.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flex_provider.engine.config import RequestSpec, RetryPolicy, RunOptions
    from flex_provider.engine.errors import FlexInputError, FlexRunAborted, Verdict, classify
    from flex_provider.engine.items import PromptBuilder, WorkItem
    from flex_provider.engine.runner import FlexEngine
    from flex_provider.engine.store import ResultStore

_HOME = {
    "RequestSpec": "config",
    "RetryPolicy": "config",
    "RunOptions": "config",
    "FlexInputError": "errors",
    "FlexRunAborted": "errors",
    "Verdict": "errors",
    "classify": "errors",
    "PromptBuilder": "items",
    "WorkItem": "items",
    "FlexEngine": "runner",
    "ResultStore": "store",
}

__all__ = [
    "FlexEngine",
    "FlexInputError",
    "FlexRunAborted",
    "PromptBuilder",
    "RequestSpec",
    "ResultStore",
    "RetryPolicy",
    "RunOptions",
    "Verdict",
    "WorkItem",
    "classify",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # next time, a plain attribute
    return value
