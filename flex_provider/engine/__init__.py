"""The flex engine: plain asyncio, no Airflow imports. See :class:`FlexEngine`."""

from flex_provider.engine.config import RequestSpec, RetryPolicy, RunOptions
from flex_provider.engine.errors import FlexInputError, FlexRunAborted, Verdict, classify
from flex_provider.engine.items import PromptBuilder, WorkItem
from flex_provider.engine.runner import FlexEngine
from flex_provider.engine.store import ResultStore

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
