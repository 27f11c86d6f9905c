"""Usage read from a decoded response body (the engine's requests skip the SDK's models)."""

from __future__ import annotations

import pytest
from openai.types import CompletionUsage
from openai.types.responses import ResponseUsage

from flex_provider.engine.usage import Usage

RESPONSES_USAGE = {
    "input_tokens": 1200,
    "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 0},
    "output_tokens": 300,
    "output_tokens_details": {"reasoning_tokens": 256},
    "total_tokens": 1500,
}
CHAT_USAGE = {
    "prompt_tokens": 50,
    "completion_tokens": 20,
    "total_tokens": 70,
    "prompt_tokens_details": {"cached_tokens": 10},
    "completion_tokens_details": {"reasoning_tokens": 5},
}


@pytest.mark.parametrize(
    ("data", "model"), [(RESPONSES_USAGE, ResponseUsage), (CHAT_USAGE, CompletionUsage)], ids=["responses", "chat"]
)
def test_a_dict_reads_as_the_sdk_model_of_the_same_json(data, model):
    assert Usage.from_json(data) == Usage.from_api(data) == Usage.from_api(model.model_validate(data))
    assert Usage.from_json(data) != Usage()


def test_counts_as_in_the_api():
    assert Usage.from_json(RESPONSES_USAGE) == Usage(input=1200, cached=1024, output=300, reasoning=256)
    assert Usage.from_json(CHAT_USAGE) == Usage(input=50, cached=10, output=20, reasoning=5)
    assert Usage.from_json({"prompt_tokens": 7, "completion_tokens": 3}) == Usage(input=7, output=3)
    assert Usage.from_json({"input_tokens": 4, "output_tokens": 2, "input_tokens_details": None}) == Usage(4, 0, 2, 0)


@pytest.mark.parametrize(
    "data",
    [
        None,
        "12",
        [1, 2],
        {},
        {"input_tokens": "many", "output_tokens": None, "output_tokens_details": "x"},
        {"prompt_tokens": True, "completion_tokens": float("nan"), "prompt_tokens_details": {"cached_tokens": 1e999}},
    ],
)
def test_garbage_reads_as_zero_never_raises(data):
    """A body is not validated as the SDK's models are: a proxy's garbage must not stop a run."""
    assert Usage.from_json(data) == Usage()
