"""Fault knobs (malformed, trickle, reset, long wait) through the real ``openai.AsyncOpenAI`` client.

These tests pin down what the SDK (openai 3.x over httpx2, ``max_retries=0``) does with each kind of
misbehaviour, so the engine can be written against facts rather than guesses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from flex_provider.emulator import EmulatorConfig, EmulatorServer, serve_in_thread
from flex_provider.emulator.__main__ import build_parser
from flex_provider.emulator.config import MALFORMED_KINDS

pytestmark = pytest.mark.integration

DOC = "The lighthouse keeper logged three storms and one unexpected visit from a seal."
FAULT_KNOBS_OFF = {"malformed_rate": 0.0, "trickle_rate": 0.0, "reset_rate": 0.0, "long_wait_rate": 0.0}


def key_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


async def create_response(client: openai.AsyncOpenAI, text: str = DOC, **kwargs: Any) -> Any:
    return await client.responses.create(model="gpt-5", input=text, service_tier="flex", **kwargs)


async def create_chat(client: openai.AsyncOpenAI, text: str = DOC, **kwargs: Any) -> Any:
    return await client.chat.completions.create(
        model="gpt-5", messages=[{"role": "user", "content": text}], service_tier="flex", **kwargs
    )


async def settled_stats(emu: EmulatorServer, until: Any, timeout: float = 3.0) -> dict[str, Any]:
    """Stats once ``until(stats)`` holds (the server books some outcomes after the client returns)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = emu.stats()
        if until(stats) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------------- knobs at zero


async def test_fault_knobs_at_zero_change_nothing(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(latency_s=0.0, standard_latency_s=0.0, **FAULT_KNOBS_OFF)
    rng_before = emu.state.rng.getstate()
    resp = await create_response(client)
    chat = await create_chat(client)
    assert isinstance(resp, Response) and resp.status == "completed" and resp.output_text
    assert isinstance(chat, ChatCompletion) and chat.choices[0].message.content
    assert emu.state.rng.getstate() == rng_before  # no RNG draw for knobs at 0: seeded runs unchanged
    stats = emu.stats()
    assert stats["faults"] == {"malformed": 0, "trickle": 0, "reset": 0, "long_wait": 0}
    assert stats["malformed_kinds"] == {}
    assert stats["inputs"][key_of(DOC)] == {"requests": 2, "succeeded": 2, "statuses": [200, 200]}
    assert stats["disconnects"] == 0 and stats["in_flight_all"] == 0


async def test_background_requests_are_exempt(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(latency_s=0.01, malformed_rate=1.0, trickle_rate=1.0, reset_rate=1.0, long_wait_rate=1.0)
    created = await create_response(client, background=True)
    assert created.status == "queued"
    for _ in range(100):
        done = await client.responses.retrieve(created.id)
        if done.status == "completed":
            break
        await asyncio.sleep(0.02)
    assert done.status == "completed" and done.output_text
    assert emu.stats()["faults"] == {"malformed": 0, "trickle": 0, "reset": 0, "long_wait": 0}


# ------------------------------------------------------------------------------------- malformed


async def test_malformed_kinds_through_the_sdk(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    """What ``responses.create`` / ``chat.completions.create`` give for each broken 200 body."""
    emu.update(latency_s=0.0, standard_latency_s=0.0)
    for kind in ("invalid_json", "empty"):  # JSON content type, unparsable body: a bare json error
        emu.update(malformed_rate=1.0, malformed_kinds=[kind])
        with pytest.raises(json.JSONDecodeError) as info:
            await create_response(client)
        assert not isinstance(info.value, openai.OpenAIError)  # NOT wrapped by the SDK
        with pytest.raises(json.JSONDecodeError):
            await create_chat(client)

    emu.update(malformed_kinds=["html"])  # non-JSON content type: the SDK hands back the text
    html = await create_response(client)
    assert isinstance(html, str) and html.startswith("<html>")
    chat_html = await create_chat(client)
    assert isinstance(chat_html, str) and "502 Bad Gateway" in chat_html

    emu.update(malformed_kinds=["null"])  # body ``null``: the SDK returns None
    assert await create_response(client) is None
    assert await create_chat(client) is None

    emu.update(malformed_kinds=["no_output"])  # object without output/choices: built without validation
    resp = await create_response(client)
    assert isinstance(resp, Response) and resp.id.startswith("resp_")
    assert resp.output is None and resp.usage is None
    with pytest.raises(TypeError):
        _ = resp.output_text  # iterates resp.output
    chat = await create_chat(client)
    assert isinstance(chat, ChatCompletion) and chat.id.startswith("chatcmpl-")
    assert chat.choices is None and chat.usage is None

    stats = emu.stats()
    assert stats["faults"]["malformed"] == 10
    assert stats["malformed_kinds"] == dict.fromkeys(MALFORMED_KINDS, 2)
    assert stats["inputs"][key_of(DOC)] == {"requests": 10, "succeeded": 0, "statuses": [200] * 10}
    assert stats["by_status"] == {"200": 10} and stats["in_flight_all"] == 0


async def test_malformed_bodies_over_http(emu: EmulatorServer) -> None:
    emu.update(latency_s=0.0, malformed_rate=1.0)
    headers = {"authorization": f"Bearer {emu.config.api_key}"}
    seen: dict[str, list[httpx.Response]] = {}
    async with httpx.AsyncClient(base_url=emu.base_url, headers=headers) as http:
        for i in range(40):  # kinds are drawn uniformly from the (default: full) list
            r = await http.post("/responses", json={"model": "gpt-5", "input": f"doc {i}"})
            assert r.status_code == 200
            if r.headers["content-type"].startswith("text/html"):
                kind = "html"
            elif not r.content:
                kind = "empty"
            elif r.content == b"null":
                kind = "null"
            else:
                try:
                    kind = "no_output" if "output" not in r.json() else "valid?!"
                except ValueError:
                    kind = "invalid_json"
            seen.setdefault(kind, []).append(r)
        assert set(seen) == set(MALFORMED_KINDS)
        assert emu.stats()["malformed_kinds"] == {kind: len(rs) for kind, rs in seen.items()}
        emu.update(malformed_kinds=["invalid_json"])
        chat = await http.post(
            "/chat/completions", json={"model": "o3", "messages": [{"role": "user", "content": "q"}]}
        )
    assert chat.status_code == 200 and chat.headers["content-type"] == "application/json"
    assert chat.text.startswith('{"id": "chatcmpl-') and chat.text.endswith('"choices": [')
    broken = seen["invalid_json"][0]
    assert broken.headers["content-type"] == "application/json"
    assert broken.text.startswith('{"id": "resp_') and broken.text.endswith('"output": [')
    assert seen["empty"][0].headers["content-length"] == "0"
    assert seen["empty"][0].headers["content-type"] == "application/json"
    no_output = seen["no_output"][0].json()
    assert no_output["object"] == "response" and no_output["id"].startswith("resp_") and "output" not in no_output
    assert all(r.headers["x-request-id"].startswith("req_") for rs in seen.values() for r in rs)


# ----------------------------------------------------------------------------------------- reset


async def test_reset_is_a_connection_error(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(latency_s=0.0, reset_rate=1.0)
    for call in (create_response, create_chat):
        with pytest.raises(openai.APIConnectionError) as info:
            await call(client)
        err = info.value
        assert not isinstance(err, openai.APITimeoutError) and not isinstance(err, openai.APIStatusError)
        assert type(err.__cause__).__name__ == "RemoteProtocolError"  # httpx2: incomplete body
        assert "peer closed connection" in str(err.__cause__)
    stats = emu.stats()
    assert stats["faults"]["reset"] == 2
    assert stats["inputs"][key_of(DOC)] == {"requests": 2, "succeeded": 0, "statuses": [0, 0]}
    assert stats["by_status"] == {"0": 2} and stats["in_flight"] == 0 and stats["in_flight_all"] == 0
    emu.update(reset_rate=0.0)  # the server is fine afterwards
    assert (await create_response(client)).status == "completed"


# --------------------------------------------------------------------------------------- trickle


async def test_trickle_completes_and_timeout_is_per_read(emu: EmulatorServer) -> None:
    """A trickled answer is valid; the SDK's ``timeout`` bounds each read, not the whole call."""
    emu.update(latency_s=0.0, trickle_rate=1.0, trickle_interval_s=0.001)
    async with openai.AsyncOpenAI(
        base_url=emu.base_url, api_key=emu.config.api_key or "", max_retries=0, timeout=0.25
    ) as client:
        started = time.monotonic()
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-5", messages=[{"role": "user", "content": DOC}], service_tier="flex", max_completion_tokens=8
        )
        elapsed = time.monotonic() - started
    chat = raw.parse()
    assert isinstance(chat, ChatCompletion) and chat.choices[0].message.role == "assistant"
    assert int(raw.headers["content-length"]) == len(raw.content) > 250
    assert elapsed > 0.25  # ~1 ms per byte: longer than the timeout, yet no APITimeoutError
    stats = await settled_stats(emu, lambda s: s["requests"] == 1)
    assert stats["faults"]["trickle"] == 1
    assert stats["inputs"][key_of(DOC)] == {"requests": 1, "succeeded": 1, "statuses": [200]}
    assert stats["in_flight"] == 0 and stats["in_flight_all"] == 0


async def test_trickle_headers_first_and_abandoned_is_not_success(emu: EmulatorServer) -> None:
    emu.update(latency_s=0.0, trickle_rate=1.0, trickle_interval_s=0.5)
    # Raw HTTP: the headers (with the full Content-Length) come at once, then the body byte by byte.
    headers = {"authorization": f"Bearer {emu.config.api_key}"}
    async with httpx.AsyncClient(base_url=emu.base_url, headers=headers) as http:
        body = {"model": "gpt-5", "input": DOC, "service_tier": "flex"}
        async with http.stream("POST", "/responses", json=body, timeout=2) as r:
            assert r.status_code == 200 and int(r.headers["content-length"]) > 500
            first = await anext(r.aiter_raw())
            assert first == b"{"
            assert emu.stats()["in_flight"] == 1  # the flex slot is held while trickling
        # leaving the block closes the connection mid-body

    # The SDK with a timeout shorter than the byte interval: APITimeoutError.
    async with openai.AsyncOpenAI(
        base_url=emu.base_url, api_key=emu.config.api_key or "", max_retries=0, timeout=0.3
    ) as client:
        with pytest.raises(openai.APITimeoutError):
            await create_response(client)
        with pytest.raises(openai.APITimeoutError):
            await create_chat(client)
    stats = await settled_stats(emu, lambda s: s["disconnects"] == 3 and s["in_flight_all"] == 0)
    assert stats["faults"]["trickle"] == 3 and stats["disconnects"] == 3
    assert stats["inputs"][key_of(DOC)] == {"requests": 3, "succeeded": 0, "statuses": [499, 499, 499]}
    assert stats["in_flight"] == 0 and stats["in_flight_all"] == 0
    assert not emu.state.handlers  # no trickle task left behind


def test_shutdown_while_trickling_is_quick() -> None:
    errors: list[BaseException] = []
    with serve_in_thread(EmulatorConfig(latency_s=0.0, trickle_rate=1.0, trickle_interval_s=5.0)) as emu:
        body = {"model": "gpt-5", "input": "slow", "service_tier": "flex"}

        def call() -> None:
            try:
                httpx.post(f"{emu.base_url}/responses", json=body, timeout=20)
            except httpx.HTTPError as exc:
                errors.append(exc)

        worker = threading.Thread(target=call)
        worker.start()
        while emu.stats()["faults"]["trickle"] == 0:
            time.sleep(0.01)
        started = time.monotonic()
    worker.join(timeout=5)
    assert time.monotonic() - started < 2.0
    assert len(errors) == 1 and isinstance(errors[0], httpx.RemoteProtocolError)
    stats = emu.stats()
    assert stats["inputs"][key_of("slow")]["succeeded"] == 0 and stats["in_flight_all"] == 0


# ------------------------------------------------------------------------------------- long wait


async def test_long_wait_is_a_daily_rate_limit(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(long_wait_rate=1.0)
    for call in (create_response, create_chat):
        with pytest.raises(openai.RateLimitError) as info:
            await call(client)
        err = info.value
        assert err.status_code == 429 and err.code == "rate_limit_exceeded" and err.type == "requests"
        assert "requests per day (RPD)" in err.message and "24h0m0s" in err.message
        h = err.response.headers
        assert (h["retry-after"], h["retry-after-ms"]) == ("86400", "86400000")
        assert h["x-ratelimit-limit-requests"] == "10000"
        assert h["x-ratelimit-remaining-requests"] == "0"
        assert h["x-ratelimit-reset-requests"] == "24h0m0s"
    emu.update(long_wait_s=90)
    with pytest.raises(openai.RateLimitError) as info:
        await create_response(client)
    assert info.value.response.headers["x-ratelimit-reset-requests"] == "1m30s"
    assert info.value.response.headers["retry-after"] == "90"
    stats = emu.stats()
    assert stats["faults"]["long_wait"] == 3
    assert stats["by_error_code"] == {"rate_limit_exceeded": 3}
    assert stats["inputs"][key_of(DOC)] == {"requests": 3, "succeeded": 0, "statuses": [429, 429, 429]}


async def test_long_wait_comes_after_rpm(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(long_wait_rate=1.0, rate_limit_rpm=1)
    with pytest.raises(openai.RateLimitError) as first:
        await create_response(client)
    with pytest.raises(openai.RateLimitError) as second:
        await create_response(client)
    assert "requests per day" in first.value.message  # RPM admitted it, then the daily limit hit
    assert "requests per min" in second.value.message  # RPM bucket now empty: RPM answers first
    assert emu.stats()["faults"]["long_wait"] == 1


# --------------------------------------------------------------------------- config, seed, stats


async def test_fault_knob_config_env_and_cli(emu: EmulatorServer) -> None:
    async with httpx.AsyncClient(base_url=emu.url) as http:
        ok = await http.post("/emulator/config", json={"malformed_rate": 0.5, "malformed_kinds": ["html", "null"]})
        assert ok.status_code == 200 and ok.json()["malformed_kinds"] == ["html", "null"]
        for bad in (
            {"malformed_kinds": ["bogus"]},
            {"malformed_kinds": []},
            {"trickle_rate": 1.5},
            {"reset_rate": -0.1},
            {"long_wait_s": -1},
            {"trickle_interval_s": -1},
        ):
            assert (await http.post("/emulator/config", json=bad)).status_code == 400, bad
        cfg = (await http.get("/emulator/config")).json()
    assert cfg["trickle_interval_s"] == 0.5 and cfg["long_wait_s"] == 86400.0 and cfg["reset_rate"] == 0.0
    env = {
        "FLEX_EMULATOR_MALFORMED_KINDS": "empty, no_output",
        "FLEX_EMULATOR_RESET_RATE": "0.25",
        "FLEX_EMULATOR_TRICKLE_RATE": "0.1",
        "FLEX_EMULATOR_TRICKLE_INTERVAL_S": "2",
        "FLEX_EMULATOR_LONG_WAIT_RATE": "0.05",
        "FLEX_EMULATOR_LONG_WAIT_S": "3600",
    }
    from_env = EmulatorConfig.from_env(env)
    assert from_env.malformed_kinds == ["empty", "no_output"] and from_env.reset_rate == 0.25
    assert (from_env.trickle_rate, from_env.trickle_interval_s) == (0.1, 2.0)
    assert (from_env.long_wait_rate, from_env.long_wait_s) == (0.05, 3600.0)
    assert EmulatorConfig().malformed_kinds == list(MALFORMED_KINDS)
    args = build_parser().parse_args(
        ["--malformed-rate", "0.2", "--malformed-kinds", "html,null", "--trickle-interval", "0.1", "--long-wait", "60"]
    )
    assert (args.malformed_rate, args.malformed_kinds) == (0.2, ["html", "null"])
    assert (args.trickle_interval_s, args.long_wait_s) == (0.1, 60.0)


async def test_faults_are_seeded_and_reset_clears_counts(emu: EmulatorServer) -> None:
    emu.update(
        latency_s=0.0,
        seed=7,
        malformed_rate=0.2,
        trickle_rate=0.2,
        trickle_interval_s=0.0,
        reset_rate=0.2,
        long_wait_rate=0.1,
    )
    headers = {"authorization": f"Bearer {emu.config.api_key}"}

    async def pattern() -> list[str]:
        out = []
        async with httpx.AsyncClient(base_url=emu.base_url, headers=headers) as http:
            for i in range(30):
                try:
                    r = await http.post("/responses", json={"model": "gpt-5", "input": f"doc {i}"})
                except httpx.RemoteProtocolError:
                    out.append("reset")
                    continue
                try:
                    ok = r.status_code == 200 and isinstance(r.json(), dict) and "output" in r.json()
                except ValueError:
                    ok = False
                out.append(f"{r.status_code}:{'ok' if ok else 'broken'}")
        return out

    first = await pattern()
    stats = await settled_stats(emu, lambda s: s["requests"] == 30)
    faults = stats["faults"]
    assert faults["reset"] == first.count("reset") > 0
    assert faults["long_wait"] == first.count("429:broken") > 0
    assert faults["malformed"] == first.count("200:broken") > 0
    assert faults["trickle"] > 0
    succeeded = sum(v["succeeded"] for v in stats["inputs"].values())
    assert succeeded == first.count("200:ok")  # trickled answers count, broken ones don't
    emu.reset()  # re-seeds the RNG and clears the fault counters
    assert emu.stats()["faults"] == {"malformed": 0, "trickle": 0, "reset": 0, "long_wait": 0}
    assert emu.stats()["malformed_kinds"] == {}
    assert await pattern() == first
