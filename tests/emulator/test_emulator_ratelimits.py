"""Request and token limits per window, through the real ``openai.AsyncOpenAI`` client.

What the engine's pacing relies on: the ``x-ratelimit-*`` headers on every answer add up, a 429
``rate_limit_exceeded`` says which limit (``type`` ``requests`` or ``tokens``) and for how long, and
that wait is the truth (waiting it lets the next request through, waiting less does not). Windows
are a few seconds so the tests stay quick.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest

from flex_provider.emulator import EmulatorConfig, EmulatorServer
from flex_provider.emulator.__main__ import build_parser
from tests.emulator.conftest import API_KEY

pytestmark = pytest.mark.integration

DOC = "The ferry timetable changed twice this spring, and the harbour office printed neither version."
LIMIT_HEADERS = [
    f"x-ratelimit-{what}-{kind}" for what in ("limit", "remaining", "reset") for kind in ("requests", "tokens")
]
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def go_duration(text: str) -> float:
    """Seconds of a Go-style duration (``20ms``, ``1.5s``, ``6m0s``); fails on anything else."""
    parts = _DURATION.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a Go duration: {text!r}"
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


async def raw_response(client: openai.AsyncOpenAI, text: str = DOC, model: str = "gpt-5-mini", **kwargs: Any) -> Any:
    return await client.responses.with_raw_response.create(model=model, input=text, **kwargs)


async def rate_limited(call: Awaitable[Any]) -> openai.RateLimitError:
    with pytest.raises(openai.RateLimitError) as info:
        await call
    return info.value


# ---------------------------------------------------------------------------------- defaults off


async def test_no_limits_no_headers_by_default(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    assert (emu.config.rpm_limit, emu.config.tpm_limit, emu.config.rate_window_s) == (None, None, 60.0)
    raw = await raw_response(client, max_output_tokens=50)
    assert not [h for h in raw.headers if h.startswith("x-ratelimit-")]
    usage = raw.parse().usage
    stats = emu.stats()
    # Even unlimited, the stats say what a limiter would have charged: prompt + max output tokens.
    assert stats["admitted"] == {"requests": 1, "tokens": usage.input_tokens + 50}
    assert stats["rate_limited"] == {"requests": 0, "tokens": 0, "requests_per_day": 0}


# ---------------------------------------------------------------------------- headers add up


async def test_headers_add_up_across_tiers_and_apis(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    """Each answer's remaining-* is the limit minus what every answer so far was charged (prompt +
    max output tokens, the default when absent), whatever the tier or API; reset-* is the time to
    refill that. A 10-hour window makes the refill during the test negligible (0.6 token/s)."""
    emu.update(rpm_limit=100, tpm_limit=20_000, rate_window_s=36_000, tpm_default_output_tokens=700)
    token_rate = 20_000 / 36_000
    charged: list[int] = []
    answers = []

    raw = await raw_response(client, service_tier="flex", max_output_tokens=200)
    charged.append(raw.parse().usage.input_tokens + 200)
    answers.append(raw)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-5-mini", messages=[{"role": "user", "content": DOC}], max_completion_tokens=150
    )
    charged.append(raw.parse().usage.prompt_tokens + 150)
    answers.append(raw)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-5-mini", messages=[{"role": "user", "content": DOC}], service_tier="flex", max_tokens=90, n=2
    )
    charged.append(raw.parse().usage.prompt_tokens + 2 * 90)  # room for n choices
    answers.append(raw)
    raw = await raw_response(client, service_tier="priority")  # no cap: tpm_default_output_tokens
    charged.append(raw.parse().usage.input_tokens + 700)
    answers.append(raw)

    for i, raw in enumerate(answers):
        h = raw.headers
        assert all(name in h for name in LIMIT_HEADERS), h
        assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-limit-tokens"]) == ("100", "20000")
        assert int(h["x-ratelimit-remaining-requests"]) == 100 - (i + 1)
        used = sum(charged[: i + 1])
        remaining = int(h["x-ratelimit-remaining-tokens"])
        assert 20_000 - used <= remaining <= 20_000 - used + 2
        assert go_duration(h["x-ratelimit-reset-tokens"]) == pytest.approx((20_000 - remaining) / token_rate, abs=2.0)
        assert go_duration(h["x-ratelimit-reset-requests"]) == pytest.approx((i + 1) * 360, abs=1.0)
    assert "retry-after" not in answers[-1].headers
    assert emu.stats()["admitted"] == {"requests": 4, "tokens": sum(charged)}


async def test_limits_are_per_model_and_shared_by_tiers(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(rpm_limit=2, rate_window_s=60)
    await client.responses.create(model="gpt-5-mini", input=DOC, service_tier="flex")
    await client.chat.completions.create(model="gpt-5-mini", messages=[{"role": "user", "content": DOC}])
    for tier in ("default", "flex", "priority"):
        err = await rate_limited(client.responses.create(model="gpt-5-mini", input=DOC, service_tier=tier))
        assert (err.code, err.type) == ("rate_limit_exceeded", "requests")
    other = await raw_response(client, model="gpt-5")  # another model has its own limit
    assert other.headers["x-ratelimit-remaining-requests"] == "1"
    assert "x-ratelimit-limit-tokens" not in other.headers  # only the limits that are set


# ---------------------------------------------------------------------------- request limit


async def test_request_limit_429_and_truthful_retry_after(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    """3 requests per 3 s: a burst of 3 passes, the 4th gets 429 type requests; waiting part of
    its retry-after is not enough, waiting all of it is."""
    emu.update(rpm_limit=3, rate_window_s=3)
    for left in ("2", "1", "0"):
        raw = await raw_response(client)
        assert raw.headers["x-ratelimit-remaining-requests"] == left
    err = await rate_limited(raw_response(client))
    assert (err.status_code, err.code, err.type) == (429, "rate_limit_exceeded", "requests")
    h = err.response.headers
    assert all(name in h for name in LIMIT_HEADERS if name.endswith("requests"))
    assert h["x-ratelimit-limit-requests"] == "3" and h["x-ratelimit-remaining-requests"] == "0"
    wait_s = int(h["retry-after-ms"]) / 1000
    assert 0.3 < wait_s <= 1.0  # one request per second comes back
    assert float(h["retry-after"]) == pytest.approx(wait_s, abs=0.001)
    assert re.search(
        r"Rate limit reached for gpt-5-mini in organization \S+ on requests per 3s \(RPM\): "
        r"Limit 3, Used 3, Requested 1\. Please try again in \d+ms\.",
        err.message,
    ), err.message
    said = re.search(r"try again in (\S+?)\.", err.message)
    assert said and go_duration(said[1]) == pytest.approx(wait_s)

    await asyncio.sleep(wait_s * 0.3)
    early = await rate_limited(raw_response(client))
    assert early.type == "requests"
    await asyncio.sleep(int(early.response.headers["retry-after-ms"]) / 1000)
    ok = await raw_response(client)
    assert ok.headers["x-ratelimit-remaining-requests"] == "0"
    assert ok.parse().output_text

    stats = emu.stats()
    assert stats["rate_limited"] == {"requests": 2, "tokens": 0, "requests_per_day": 0}
    assert stats["by_error_code"] == {"rate_limit_exceeded": 2}
    assert stats["admitted"]["requests"] == 4 and stats["billing"]["requests"] == 4  # a 429 is not billed


async def test_window_refills(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    """After reset-requests the bucket is full again: a whole new burst passes."""
    emu.update(rpm_limit=2, rate_window_s=2)
    await raw_response(client)
    last = await raw_response(client)
    await rate_limited(raw_response(client))
    reset_s = go_duration(last.headers["x-ratelimit-reset-requests"])
    assert 1.5 <= reset_s <= 2.0  # 2 s minus what came back between the two requests
    await asyncio.sleep(reset_s)
    first = await raw_response(client)
    assert first.headers["x-ratelimit-remaining-requests"] == "1"  # full (2) minus this one
    second = await raw_response(client)
    assert second.headers["x-ratelimit-remaining-requests"] == "0"


# ------------------------------------------------------------------------------ token limit


async def test_token_limit_429_and_truthful_retry_after(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    """1,000 tokens per 2 s (500 tokens/s) and a loose request limit: the 4th request of ~330
    tokens is refused on tokens, with the time until 330 tokens are back."""
    emu.update(rpm_limit=100, tpm_limit=1000, rate_window_s=2)
    first = await raw_response(client, service_tier="flex", max_output_tokens=300)
    cost = first.parse().usage.input_tokens + 300
    assert 300 < cost < 340
    await raw_response(client, service_tier="flex", max_output_tokens=300)
    await raw_response(client, max_output_tokens=300)
    err = await rate_limited(raw_response(client, service_tier="flex", max_output_tokens=300))
    assert (err.code, err.type) == ("rate_limit_exceeded", "tokens")
    h = err.response.headers
    assert all(name in h for name in LIMIT_HEADERS)
    remaining = int(h["x-ratelimit-remaining-tokens"])
    assert remaining < cost and int(h["x-ratelimit-remaining-requests"]) > 0
    wait_s = int(h["retry-after-ms"]) / 1000
    assert wait_s == pytest.approx((cost - remaining) / 500, abs=0.01)
    match = re.search(r"on tokens per 2s \(TPM\): Limit 1000, Used (\d+), Requested (\d+)\.", err.message)
    assert match, err.message
    assert int(match[2]) == cost and int(match[1]) == 1000 - remaining

    await asyncio.sleep(wait_s)
    ok = await raw_response(client, service_tier="flex", max_output_tokens=300)
    assert int(ok.headers["x-ratelimit-remaining-tokens"]) < cost / 4  # it took what had come back
    err = await rate_limited(
        client.chat.completions.create(
            model="gpt-5-mini", messages=[{"role": "user", "content": DOC}], max_completion_tokens=300
        )
    )
    assert err.type == "tokens"  # the Chat API draws on the same limit
    stats = emu.stats()
    assert stats["rate_limited"] == {"requests": 0, "tokens": 2, "requests_per_day": 0}
    assert stats["billing"]["requests"] == 4


async def test_sdk_retry_waits_retry_after_and_gets_through(emu: EmulatorServer) -> None:
    """The openai SDK's own retry honours retry-after-ms: one 429, then a 200, in about that time."""
    emu.update(tpm_limit=600, rate_window_s=2)  # 300 tokens/s
    async with openai.AsyncOpenAI(base_url=emu.base_url, api_key=API_KEY, max_retries=1) as patient:
        await patient.responses.create(model="gpt-5-mini", input=DOC, max_output_tokens=400)
        started = time.monotonic()
        answer = await patient.responses.create(model="gpt-5-mini", input=DOC, max_output_tokens=400)
        elapsed = time.monotonic() - started
    assert answer.output_text
    assert emu.stats()["by_status"] == {"200": 2, "429": 1}
    assert 0.6 < elapsed < 2.0  # ~ (430 - ~170 left) / 300 tokens/s


async def test_request_too_large_has_no_retry_after(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(tpm_limit=1000, rate_window_s=2)  # tpm_default_output_tokens is 4096: too large
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: raw_response(client, max_output_tokens=5000),
        lambda: raw_response(client),
        lambda: client.chat.completions.with_raw_response.create(
            model="gpt-5-mini", messages=[{"role": "user", "content": DOC}], max_tokens=400, n=3
        ),
    ]
    for call in calls:
        err = await rate_limited(call())
        assert (err.code, err.type) == ("rate_limit_exceeded", "tokens")
        assert "Request too large for gpt-5-mini" in err.message and "Limit 1000, Requested" in err.message
        assert "retry-after" not in err.response.headers and "retry-after-ms" not in err.response.headers
        assert err.response.headers["x-ratelimit-remaining-tokens"] == "1000"  # nothing was taken
    emu.update(tpm_default_output_tokens=100)
    raw = await raw_response(client)
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) == 1000 - raw.parse().usage.input_tokens - 100


# ----------------------------------------------------------------- kinds of 429 stay apart


async def test_rate_limit_and_flex_capacity_counted_apart(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(rpm_limit=2, rate_window_s=60, flex_capacity=0)
    unavailable = await rate_limited(raw_response(client, service_tier="flex"))
    assert unavailable.code == "resource_unavailable"
    # The limiter admitted it before flex capacity refused it: it was charged, and says so.
    assert unavailable.response.headers["x-ratelimit-remaining-requests"] == "1"
    await raw_response(client, service_tier="default")
    limited = await rate_limited(raw_response(client, service_tier="default"))
    assert limited.code == "rate_limit_exceeded"
    emu.update(long_wait_rate=1.0, rpm_limit=None)
    daily = await rate_limited(raw_response(client))
    assert daily.code == "rate_limit_exceeded" and "requests per day" in daily.message
    stats = emu.stats()
    assert stats["unavailable"] == 1
    assert stats["rate_limited"] == {"requests": 1, "tokens": 0, "requests_per_day": 1}
    assert stats["by_error_code"] == {"resource_unavailable": 1, "rate_limit_exceeded": 2}
    assert stats["billing"]["requests"] == 1


async def test_long_wait_keeps_token_headers(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    """A daily-limit 429 names its own request limit but still carries the per-window token headers."""
    emu.update(tpm_limit=10_000, rate_window_s=60, long_wait_rate=1.0)
    err = await rate_limited(raw_response(client, max_output_tokens=100))
    h = err.response.headers
    assert h["x-ratelimit-limit-requests"] == "10000" and h["x-ratelimit-reset-requests"] == "24h0m0s"
    assert h["x-ratelimit-limit-tokens"] == "10000" and int(h["x-ratelimit-remaining-tokens"]) < 10_000 - 100


# ------------------------------------------------------------------------------------- knobs


async def test_knobs_at_runtime_env_and_cli(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    async with httpx.AsyncClient(base_url=emu.url) as http:
        ok = await http.post(
            "/emulator/config",
            json={"rpm_limit": 5, "tpm_limit": 9000, "rate_window_s": 2.5, "tpm_default_output_tokens": 64},
        )
        assert ok.status_code == 200
        assert {k: ok.json()[k] for k in ("rpm_limit", "tpm_limit", "rate_window_s", "tpm_default_output_tokens")} == {
            "rpm_limit": 5,
            "tpm_limit": 9000,
            "rate_window_s": 2.5,
            "tpm_default_output_tokens": 64,
        }
        for bad in ({"rpm_limit": 0}, {"tpm_limit": -5}, {"rate_window_s": 0}, {"tpm_default_output_tokens": -1}):
            assert (await http.post("/emulator/config", json=bad)).status_code == 400, bad
        legacy = await http.post("/emulator/config", json={"rate_limit_rpm": 7})  # the knob's old name
        assert legacy.status_code == 200 and legacy.json()["rpm_limit"] == 7
        assert "rate_limit_rpm" not in legacy.json()
    raw = await raw_response(client)
    assert raw.headers["x-ratelimit-limit-requests"] == "7" and raw.headers["x-ratelimit-remaining-requests"] == "6"
    emu.update(rpm_limit=8)  # a change of limits starts full buckets
    raw = await raw_response(client)
    assert raw.headers["x-ratelimit-remaining-requests"] == "7"
    emu.update(rpm_limit=None, tpm_limit=None)
    assert not [h for h in (await raw_response(client)).headers if h.startswith("x-ratelimit-")]

    env = {
        "FLEX_EMULATOR_RATE_LIMIT_RPM": "30",
        "FLEX_EMULATOR_TPM_LIMIT": "40000",
        "FLEX_EMULATOR_RATE_WINDOW_S": "6",
        "FLEX_EMULATOR_TPM_DEFAULT_OUTPUT_TOKENS": "256",
    }
    cfg = EmulatorConfig.from_env(env)
    assert (cfg.rpm_limit, cfg.tpm_limit, cfg.rate_window_s, cfg.tpm_default_output_tokens) == (30, 40000, 6.0, 256)
    assert EmulatorConfig.from_env({**env, "FLEX_EMULATOR_RPM_LIMIT": "31"}).rpm_limit == 31  # new name wins
    assert EmulatorConfig(rate_limit_rpm=12).rpm_limit == 12  # type: ignore[call-arg]
    args = build_parser().parse_args(["--rpm", "30", "--tpm", "40000", "--rate-window", "6"])
    assert (args.rpm_limit, args.tpm_limit, args.rate_window_s) == (30, 40000, 6.0)
    args = build_parser().parse_args(["--rate-limit-rpm", "9", "--tpm-limit", "none"])
    assert (args.rpm_limit, args.tpm_limit) == (9, None)
