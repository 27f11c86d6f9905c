"""Knobs of the flex emulator.

The emulator exists to make the unpleasant parts of Flex processing (429 "Resource Unavailable",
slow answers, 5xx, hangs, quota, request and token rate limits, what it all costs) and of a misbehaving server (broken 200 bodies,
trickled bodies, dropped connections, day-long 429s) reproducible on a laptop and in CI. Every such
behaviour is a field here so a test can turn it on, and every random decision is drawn from an RNG
seeded by ``seed`` so a failing run can be replayed.

The config is a pydantic model (validated once, when built or updated) rather than something
checked per request: the hot path only reads plain attributes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flex_provider.engine.pricing import DEFAULT_PRICES

ENV_PREFIX = "FLEX_EMULATOR_"

# The models the emulator knows are the engine's price table: one list, so a model the engine can
# price is one the emulator serves. Which of them accept service_tier="flex" is a separate fact.
DEFAULT_MODELS: tuple[str, ...] = tuple(DEFAULT_PRICES)
DEFAULT_FLEX_MODELS: tuple[str, ...] = ("gpt-5", "gpt-5-mini", "gpt-5-nano", "o3", "o4-mini")
# Broken 200 answers ``malformed_rate`` can give (see ``app._malformed_response``).
MALFORMED_KINDS: tuple[str, ...] = ("invalid_json", "html", "empty", "null", "no_output")
# Knob names kept working after a rename (old -> new), in the constructor, the runtime update, env vars.
LEGACY_KNOBS: dict[str, str] = {"rate_limit_rpm": "rpm_limit"}


class ModelPrice(BaseModel):
    """Standard-tier list price of one model, USD per million tokens (the shape of the engine's ``prices=``)."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0.0)
    cached_input: float = Field(ge=0.0)
    output: float = Field(ge=0.0)


class EmulatorConfig(BaseModel):
    """Behaviour of one emulator instance; can be changed at runtime via ``POST /emulator/config``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    api_key: str | None = Field(
        default=None, description="None accepts any bearer token; else require exactly this key (401)."
    )
    latency_s: float = Field(default=0.05, ge=0.0, description="Mean latency of a flex request.")
    latency_jitter: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Relative spread: latency ~ U(mean*(1-j), mean*(1+j))."
    )
    standard_latency_s: float = Field(default=0.02, ge=0.0, description="Mean latency of non-flex tiers.")
    flex_capacity: int | None = Field(
        default=None, ge=0, description="Max concurrent in-flight flex requests (None = unlimited)."
    )
    unavailable_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of flex requests -> 429.")
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of generation requests -> 500/502/503.")
    retry_after_s: float | None = Field(
        default=None, ge=0.0, description="If set, Retry-After header on 429 resource_unavailable and 503."
    )
    rpm_limit: int | None = Field(
        default=None,
        ge=1,
        description="Requests per rate_window_s, per model, all tiers alike (bucket refilled continuously); "
        "beyond -> 429 rate_limit_exceeded type 'requests'. None = no limit. Old name: rate_limit_rpm.",
    )
    tpm_limit: int | None = Field(
        default=None,
        ge=1,
        description="Tokens per rate_window_s, per model, all tiers alike: a request is charged its estimated "
        "prompt tokens plus its max output tokens when admitted; beyond -> 429 rate_limit_exceeded type "
        "'tokens'. None = no limit.",
    )
    rate_window_s: float = Field(
        default=60.0,
        gt=0.0,
        description="Window of rpm_limit and tpm_limit (OpenAI: 60 s); tests shorten it to stay quick.",
    )
    tpm_default_output_tokens: int = Field(
        default=4096,
        ge=0,
        description="Output tokens charged against tpm_limit for a request that sets no "
        "max_output_tokens / max_completion_tokens / max_tokens.",
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="Standard-tier prices (USD per 1M tokens: input, cached_input, output) by model, over the "
        "engine's DEFAULT_PRICES, for the billing in /emulator/stats; JSON on the CLI and in env vars.",
    )
    hang_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of generation requests that hang for hang_s."
    )
    hang_s: float = Field(default=3600.0, ge=0.0, description="How long a hanging request hangs.")
    malformed_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of inline generation requests answered 200 with a broken body (see malformed_kinds).",
    )
    malformed_kinds: list[str] = Field(
        default_factory=lambda: list(MALFORMED_KINDS),
        min_length=1,
        description="Broken bodies malformed_rate picks from, uniformly: " + ", ".join(MALFORMED_KINDS) + ".",
    )
    trickle_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of inline generation requests whose valid 200 body is sent one byte at a time.",
    )
    trickle_interval_s: float = Field(default=0.5, ge=0.0, description="Pause between two bytes of a trickled body.")
    reset_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of inline generation requests whose connection is dropped mid-answer.",
    )
    long_wait_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of inline generation requests -> 429 rate_limit_exceeded (requests per day).",
    )
    long_wait_s: float = Field(
        default=86400.0, ge=0.0, description="Retry-After (and reset) of a long_wait_rate 429, in seconds."
    )
    insufficient_quota: bool = Field(default=False, description="Every generation request -> 429 quota.")
    model_snapshot_suffix: str | None = Field(
        default=None,
        description="Answers name the model as this dated snapshot, e.g. '-2025-08-07' (OpenAI reports "
        "'gpt-5-mini-2025-08-07' for 'gpt-5-mini'); None echoes the requested name.",
    )
    models: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MODELS),
        description="Known model ids (comma-separated on the CLI); others -> 404 model_not_found.",
    )
    flex_models: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FLEX_MODELS),
        description="Models accepting service_tier=flex; flex on another known model -> 400.",
    )
    background_expiry_s: float = Field(
        default=600.0, ge=0.0, description="Finished stored responses are forgotten after this (404)."
    )
    cache_min_tokens: int = Field(
        default=256, ge=1, description="Minimum instructions-prefix size (tokens) eligible for prompt cache."
    )
    seed: int = Field(default=0, description="Seeds the RNG behind every 429/5xx/hang/fault/latency decision.")

    @model_validator(mode="before")
    @classmethod
    def _legacy_names(cls, data: Any) -> Any:
        """Accept renamed knobs under their old names (the old name wins when both are given)."""
        if isinstance(data, dict) and any(old in data for old in LEGACY_KNOBS):
            data = dict(data)
            for old, new in LEGACY_KNOBS.items():
                if old in data:
                    data[new] = data.pop(old)
        return data

    @field_validator("malformed_kinds")
    @classmethod
    def _known_malformed_kinds(cls, kinds: list[str]) -> list[str]:
        unknown = [kind for kind in kinds if kind not in MALFORMED_KINDS]
        if unknown:
            raise ValueError(f"unknown malformed kind(s) {unknown}; known: {', '.join(MALFORMED_KINDS)}")
        return kinds

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> EmulatorConfig:
        """Build a config from ``FLEX_EMULATOR_<FIELD>`` variables, then apply ``overrides``.

        List fields accept JSON (``["gpt-5"]``) or a comma-separated string; ``none``/empty clears an
        optional field. Pydantic does the type coercion, so "0.5" becomes 0.5.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for old, new in LEGACY_KNOBS.items():
            raw = env.get(ENV_PREFIX + old.upper())
            if raw is not None and ENV_PREFIX + new.upper() not in env:
                values[new] = parse_env_value(raw, is_list=False)
        for name, field in cls.model_fields.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            values[name] = parse_env_value(raw, is_list=field.annotation == list[str])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

    def updated(self, knobs: Mapping[str, Any]) -> EmulatorConfig:
        """Return a validated copy with ``knobs`` applied (unknown knob names raise ValueError)."""
        unknown = set(knobs) - set(type(self).model_fields) - set(LEGACY_KNOBS)
        if unknown:
            raise ValueError(f"unknown emulator knob(s): {', '.join(sorted(unknown))}")
        return type(self).model_validate({**self.model_dump(), **knobs})

    def public_dict(self) -> dict[str, Any]:
        """Config as JSON for ``GET /emulator/config``; the API key is masked, never echoed."""
        data = self.model_dump()
        if data["api_key"] is not None:
            data["api_key"] = "***"
        return data


def parse_env_value(raw: str, *, is_list: bool) -> Any:
    """Turn one env var string into a value pydantic can validate (a JSON object for dict knobs)."""
    text = raw.strip()
    if text.lower() in ("", "none", "null"):
        return None
    if text.startswith("{"):
        return json.loads(text)
    if is_list:
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return text
