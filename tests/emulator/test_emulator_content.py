"""Unit tests of the pure parts: schema-driven JSON, token rules, config loading, durations."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from flex_provider.emulator import EmulatorConfig
from flex_provider.emulator.content import (
    Prompt,
    PromptCache,
    generate_json,
    input_key,
    prompt_from_chat,
    prompt_from_responses,
    reasoning_tokens,
    salient_words,
)
from flex_provider.emulator.errors import format_duration, retry_after_headers
from flex_provider.engine.pricing import DEFAULT_PRICES


class Constrained(BaseModel):
    kind: Literal["invoice", "receipt"]
    code: Annotated[str, Field(min_length=12, max_length=16)]
    score: Annotated[int, Field(ge=3, le=5)]
    ratio: Annotated[float, Field(gt=0, lt=1)]
    tags: Annotated[list[str], Field(min_length=2, max_length=2)]
    extra: dict[str, int]
    pair: tuple[int, str]
    nested: list[list[bool]]


def prompt(text: str, prefix: str = "") -> Prompt:
    return Prompt(user_text=text, prefix_text=prefix, n_messages=1)


@pytest.mark.parametrize("text", ["alpha beta gamma", "", "ünïcödé wörds ✓", "x" * 5000])
def test_generated_json_validates_against_constraints(text: str) -> None:
    out = generate_json(Constrained.model_json_schema(), prompt(text))
    parsed = Constrained.model_validate_json(out)
    assert 3 <= parsed.score <= 5 and 0 < parsed.ratio < 1
    assert out == generate_json(Constrained.model_json_schema(), prompt(text))  # deterministic


def test_generated_json_varies_with_input() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["a", "n"],
        "additionalProperties": False,
    }
    outs = {generate_json(schema, prompt(f"document number {i} about topic{i}")) for i in range(10)}
    assert len(outs) == 10
    assert set(json.loads(next(iter(outs)))) == {"a", "n"}


def test_prompt_extraction_and_key() -> None:
    p = prompt_from_responses({"instructions": "Sys", "input": "hello there"})
    assert (p.user_text, p.prefix_text, p.key) == ("hello there", "Sys", input_key("hello there"))
    p = prompt_from_responses(
        {
            "input": [
                {"role": "system", "content": "Sys"},
                {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
                {"role": "assistant", "content": "ignored for the key"},
                {"role": "user", "content": "c"},
            ]
        }
    )
    assert p.user_text == "a\nb\nc" and p.prefix_text == "Sys"
    c = prompt_from_chat({"messages": [{"role": "developer", "content": "D"}, {"role": "user", "content": "q"}]})
    assert (c.user_text, c.prefix_text) == ("q", "D")
    assert not prompt_from_chat({"messages": []}).valid
    assert not prompt_from_responses({}).valid


def test_salient_words_and_reasoning() -> None:
    assert salient_words("The cat and the cat and the dog") == ["cat", "dog"]
    p = prompt("some input")
    assert reasoning_tokens("gpt-4.1", None, p) == 0
    medium = reasoning_tokens("o3", None, p)
    assert medium > 0 and reasoning_tokens("o3", "high", p) == 2 * medium
    assert reasoning_tokens("gpt-5", "minimal", p) == 0


def test_prompt_cache_rule() -> None:
    cache = PromptCache()
    p = prompt("doc", prefix="y" * 1200)  # 300 tokens
    assert cache.lookup("o3", p, "flex", 256).cached_tokens == 0
    cache.store("o3", p, "flex", 256)
    assert cache.lookup("o3", p, "flex", 256).cached_tokens == 256
    assert cache.lookup("o4-mini", p, "flex", 256).cached_tokens == 0  # per model
    miss = cache.lookup("o3", p, "default", 256)
    assert miss.cached_tokens == 0 and miss.miss_reason == "service_tier_changed"
    assert cache.lookup("o3", p, "flex", 512).cached_tokens == 0  # below the threshold


def test_durations_and_retry_after() -> None:
    assert format_duration(0.017) == "17ms"
    assert format_duration(1.0) == "1s"
    assert format_duration(8.64) == "8.64s"
    assert format_duration(360) == "6m0s"
    assert format_duration(3725) == "1h2m5s"
    assert retry_after_headers(2) == {"retry-after": "2", "retry-after-ms": "2000"}
    assert retry_after_headers(0.5) == {"retry-after": "0.5", "retry-after-ms": "500"}


def test_config_from_env_and_update() -> None:
    cfg = EmulatorConfig.from_env(
        {
            "FLEX_EMULATOR_LATENCY_S": "0.5",
            "FLEX_EMULATOR_FLEX_CAPACITY": "4",
            "FLEX_EMULATOR_MODELS": "gpt-5,o3",
            "FLEX_EMULATOR_INSUFFICIENT_QUOTA": "true",
            "FLEX_EMULATOR_RETRY_AFTER_S": "none",
        }
    )
    assert (cfg.latency_s, cfg.flex_capacity, cfg.models, cfg.insufficient_quota) == (0.5, 4, ["gpt-5", "o3"], True)
    assert cfg.retry_after_s is None
    assert cfg.updated({"seed": 7}).seed == 7
    with pytest.raises(ValueError):
        cfg.updated({"bogus": 1})
    with pytest.raises(ValueError):
        cfg.updated({"unavailable_rate": 1.5})
    defaults = EmulatorConfig()
    assert defaults.flex_models == ["gpt-5", "gpt-5-mini", "gpt-5-nano", "o3", "o4-mini"]
    # the known models are the engine's price table (one list), flex models a subset of them
    assert defaults.models == list(DEFAULT_PRICES)
    assert set(defaults.flex_models) <= set(defaults.models)
    assert (defaults.latency_s, defaults.latency_jitter, defaults.standard_latency_s) == (0.05, 0.5, 0.02)
    assert (defaults.hang_s, defaults.background_expiry_s, defaults.seed) == (3600, 600, 0)
