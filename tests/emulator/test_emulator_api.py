"""The emulator through the real ``openai.AsyncOpenAI`` client: shapes, errors, knobs, stats."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import re
import threading
import time
from typing import Optional

import httpx
import openai
import pytest
from openai.types import Model
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from pydantic import BaseModel

from flex_provider.emulator import EmulatorConfig, EmulatorServer, serve_in_thread

pytestmark = pytest.mark.integration


def key_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Sentiment(enum.Enum):
    positive = "positive"
    negative = "negative"
    neutral = "neutral"


class Entity(BaseModel):
    name: str
    mentions: int


class Enrichment(BaseModel):
    summary: str
    sentiment: Sentiment
    entities: list[Entity]
    language: Optional[str] = None  # noqa: UP045 - the Optional spelling is what users write
    confidence: float
    is_spam: bool


class Node(BaseModel):
    label: str
    children: list[Node] = []


DOC_A = "Quarterly revenue of the Zurich bakery grew by twelve percent thanks to sourdough exports."
DOC_B = "The volcano near Reykjavik erupted twice, grounding flights across northern Europe."


# ----------------------------------------------------------------------------------- responses


async def test_responses_text_is_deterministic_and_input_dependent(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(model="gpt-5-mini", input=DOC_A, service_tier="flex")
    again = await client.responses.create(model="gpt-5-mini", input=DOC_A, service_tier="flex")
    other = await client.responses.create(model="gpt-5-mini", input=DOC_B, service_tier="flex")

    assert first.object == "response"
    assert first.id.startswith("resp_") and first.id != again.id
    assert first.status == "completed"
    assert first.output_text == again.output_text
    assert first.output_text != other.output_text
    assert first.output_text.startswith("Summary:")
    assert "bakery" in first.output_text
    assert first.service_tier == "flex"
    message = next(item for item in first.output if item.type == "message")
    assert message.id.startswith("msg_") and message.role == "assistant"
    assert first.error is None and first.incomplete_details is None


async def test_service_tier_echo(client: openai.AsyncOpenAI) -> None:
    auto = await client.responses.create(model="gpt-5", input=DOC_A, service_tier="auto")
    default = await client.responses.create(model="gpt-5", input=DOC_A, service_tier="default")
    unset = await client.responses.create(model="gpt-5", input=DOC_A)
    chat = await client.chat.completions.create(
        model="gpt-5", messages=[{"role": "user", "content": DOC_A}], service_tier="flex"
    )
    assert (auto.service_tier, default.service_tier, unset.service_tier) == ("default",) * 3
    assert chat.service_tier == "flex"


async def test_structured_output_matches_pydantic_schema(client: openai.AsyncOpenAI) -> None:
    schema = Enrichment.model_json_schema()  # with $defs/$ref, enum and anyOf-null
    resp = await client.responses.create(
        model="o4-mini",
        input=DOC_A,
        service_tier="flex",
        text={"format": {"type": "json_schema", "name": "Enrichment", "schema": schema, "strict": True}},
    )
    parsed = Enrichment.model_validate_json(resp.output_text)
    assert parsed.entities and 1 <= len(parsed.entities) <= 3
    assert isinstance(parsed.sentiment, Sentiment)
    again = await client.responses.create(
        model="o4-mini",
        input=DOC_A,
        text={"format": {"type": "json_schema", "name": "Enrichment", "schema": schema, "strict": True}},
    )
    assert again.output_text == resp.output_text


async def test_sdk_parse_helpers(client: openai.AsyncOpenAI) -> None:
    resp = await client.responses.parse(model="gpt-5-nano", input=DOC_B, text_format=Enrichment)
    assert isinstance(resp.output_parsed, Enrichment)
    tree = await client.responses.parse(model="gpt-5-nano", input=DOC_B, text_format=Node)
    assert isinstance(tree.output_parsed, Node)
    chat = await client.chat.completions.parse(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": DOC_B}], response_format=Enrichment
    )
    assert isinstance(chat.choices[0].message.parsed, Enrichment)


async def test_chat_structured_and_json_object(client: openai.AsyncOpenAI) -> None:
    schema = Enrichment.model_json_schema()
    chat = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "Extract."}, {"role": "user", "content": DOC_B}],
        response_format={"type": "json_schema", "json_schema": {"name": "Enrichment", "schema": schema}},
    )
    Enrichment.model_validate_json(chat.choices[0].message.content or "")
    obj = await client.responses.create(model="gpt-4.1", input=DOC_B, text={"format": {"type": "json_object"}})
    assert obj.output_text.startswith("{")
    assert isinstance(json.loads(obj.output_text), dict)


async def test_chat_completions_shape(client: openai.AsyncOpenAI) -> None:
    chat = await client.chat.completions.create(
        model="o3",
        messages=[{"role": "user", "content": [{"type": "text", "text": DOC_A}]}],
        service_tier="flex",
        max_completion_tokens=5000,
    )
    assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")
    choice = chat.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert "bakery" in (choice.message.content or "")
    usage = chat.usage
    assert usage is not None and usage.prompt_tokens_details and usage.completion_tokens_details
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert (usage.completion_tokens_details.reasoning_tokens or 0) > 0
    assert usage.prompt_tokens_details.cached_tokens == 0


async def test_models_list_and_retrieve(client: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in client.models.list()]
    for expected in ("gpt-5", "gpt-5-mini", "gpt-5-nano", "o3", "o4-mini", "gpt-4.1", "gpt-4.1-mini"):
        assert expected in ids
    model = await client.models.retrieve("o3")
    assert model.id == "o3" and model.object == "model"
    with pytest.raises(openai.NotFoundError) as info:
        await client.models.retrieve("gpt-9")
    assert info.value.code == "model_not_found"


# -------------------------------------------------------------------------------------- errors


async def test_wrong_api_key_is_401(emu: EmulatorServer) -> None:
    async with openai.AsyncOpenAI(base_url=emu.base_url, api_key="sk-wrong-key-123", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            await bad.responses.create(model="gpt-5", input=DOC_A)
    assert info.value.code == "invalid_api_key"
    assert "sk-wrong-key-123" not in info.value.message  # the key is masked
    assert info.value.request_id and info.value.request_id.startswith("req_")
    assert emu.stats()["auth_failures"] == 1


async def test_unknown_model_is_404(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await client.responses.create(model="gpt-9-ultra", input=DOC_A)
    assert info.value.code == "model_not_found"
    assert "The model `gpt-9-ultra` does not exist or you do not have access to it." in info.value.message


async def test_flex_on_non_flex_model_is_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="gpt-4.1", input=DOC_A, service_tier="flex")
    assert info.value.param == "service_tier"
    assert "gpt-4.1" in info.value.message and "flex" in info.value.message
    ok = await client.responses.create(model="gpt-4.1", input=DOC_A, service_tier="default")
    assert ok.status == "completed"


async def test_unavailable_rate_gives_resource_unavailable(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(unavailable_rate=1.0, retry_after_s=3)
    with pytest.raises(openai.RateLimitError) as info:
        await client.responses.create(model="gpt-5", input=DOC_A, service_tier="flex")
    err = info.value
    assert err.code == "resource_unavailable" and err.type == "rate_limit_error"
    assert err.response.headers["retry-after"] == "3"
    assert err.response.headers["retry-after-ms"] == "3000"
    # Standard processing is unaffected: the documented fallback works.
    ok = await client.responses.create(model="gpt-5", input=DOC_A, service_tier="default")
    assert ok.status == "completed"
    stats = emu.stats()
    assert stats["by_tier_status"] == {"flex:429": 1, "default:200": 1}


async def test_flex_capacity_limits_concurrency(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(flex_capacity=2, latency_s=0.5, latency_jitter=0.0)

    async def one(i: int) -> str:
        try:
            await client.responses.create(model="o3", input=f"doc {i}", service_tier="flex")
        except openai.RateLimitError as exc:
            return str(exc.code)
        return "ok"

    results = await asyncio.gather(*(one(i) for i in range(5)))
    assert results.count("ok") == 2
    assert results.count("resource_unavailable") == 3
    stats = emu.stats()
    assert stats["max_in_flight"] == 2 and stats["in_flight"] == 0


async def test_insufficient_quota(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(insufficient_quota=True)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "insufficient_quota" and info.value.type == "insufficient_quota"


async def test_error_rate_gives_5xx(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(error_rate=1.0)
    codes = set()
    for i in range(12):
        with pytest.raises(openai.InternalServerError) as info:
            await client.responses.create(model="gpt-5", input=f"doc {i}")
        assert info.value.type == "server_error"
        codes.add(info.value.status_code)
    assert codes <= {500, 502, 503} and len(codes) >= 2


async def test_rate_limit_rpm_headers(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(rate_limit_rpm=2)
    first = await client.responses.with_raw_response.create(model="gpt-5", input=DOC_A)
    second = await client.responses.with_raw_response.create(model="gpt-5", input=DOC_B)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert re.fullmatch(r"\d+(\.\d+)?s|\d+ms|\d+m\d+s", first.headers["x-ratelimit-reset-requests"])
    assert first.parse().output_text
    with pytest.raises(openai.RateLimitError) as info:
        await client.responses.create(model="gpt-5", input="third")
    err = info.value
    assert err.code == "rate_limit_exceeded"
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert 25_000 <= int(err.response.headers["retry-after-ms"]) <= 30_000  # 2 RPM: one per 30 s
    assert "Limit 2" in err.message


async def test_hang_lets_client_time_out(emu: EmulatorServer) -> None:
    emu.update(hang_rate=1.0, hang_s=30)
    async with openai.AsyncOpenAI(
        base_url=emu.base_url, api_key=emu.config.api_key or "", max_retries=0, timeout=0.3
    ) as impatient:
        with pytest.raises(openai.APITimeoutError):
            await impatient.responses.create(model="gpt-5", input=DOC_A, service_tier="flex")
    for _ in range(50):  # the emulator notices the disconnect and frees the flex slot
        stats = emu.stats()
        if stats["disconnects"]:
            break
        await asyncio.sleep(0.05)
    assert stats["hangs"] == 1 and stats["disconnects"] == 1 and stats["in_flight"] == 0


async def test_invalid_requests(client: openai.AsyncOpenAI, emu: EmulatorServer) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="gpt-5", input=DOC_A, service_tier="turbo")  # type: ignore[arg-type]
    assert info.value.param == "service_tier"
    async with httpx.AsyncClient(base_url=emu.url, headers={"authorization": f"Bearer {emu.config.api_key}"}) as http:
        bad_json = await http.post("/v1/responses", content=b"{not json")
        missing = await http.post("/v1/responses", json={"model": "gpt-5"})
        unknown_route = await http.get("/v1/nope")
    assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"
    assert unknown_route.status_code == 404 and "error" in unknown_route.json()
    assert all(r.headers["x-request-id"].startswith("req_") for r in (bad_json, missing, unknown_route))


# ------------------------------------------------------------------------------------ background


async def wait_for(client: openai.AsyncOpenAI, rid: str, timeout: float = 5.0) -> openai.types.responses.Response:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.responses.retrieve(rid)
        if resp.status not in ("queued", "in_progress") or asyncio.get_running_loop().time() > deadline:
            return resp
        await asyncio.sleep(0.02)


async def test_background_create_retrieve_complete(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(latency_s=0.2, latency_jitter=0.0)
    created = await client.responses.create(model="gpt-5", input=DOC_A, background=True, service_tier="flex")
    assert created.status == "queued" and created.background is True and created.output == []
    assert emu.stats()["in_flight"] == 1  # queued flex work holds a flex slot
    done = await wait_for(client, created.id)
    assert done.status == "completed" and done.id == created.id
    sync = await client.responses.create(model="gpt-5", input=DOC_A, service_tier="flex")
    assert done.output_text == sync.output_text
    assert done.usage is not None and done.usage.output_tokens > 0
    stats = emu.stats()
    assert stats["background"]["created"] == 1 and stats["background"]["completed"] == 1
    assert stats["background"]["polled"] >= 1 and stats["in_flight"] == 0
    assert stats["inputs"][key_of(DOC_A)] == {"requests": 2, "succeeded": 2, "statuses": [200, 200]}


async def test_background_cancel_is_idempotent(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(latency_s=5.0)
    created = await client.responses.create(model="o3", input=DOC_B, background=True, service_tier="flex")
    cancelled = await client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert (await client.responses.cancel(created.id)).status == "cancelled"
    assert (await client.responses.retrieve(created.id)).status == "cancelled"
    stats = emu.stats()
    assert stats["background"]["cancelled"] == 1 and stats["in_flight"] == 0
    assert stats["inputs"][key_of(DOC_B)]["succeeded"] == 0

    emu.update(latency_s=0.01)
    fast = await client.responses.create(model="o3", input=DOC_A, background=True)
    done = await wait_for(client, fast.id)
    assert (await client.responses.cancel(done.id)).status == "completed"  # finished: unchanged
    sync = await client.responses.create(model="o3", input=DOC_A)
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(sync.id)  # only background responses can be cancelled


async def test_background_expiry(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(latency_s=0.01, background_expiry_s=0.3)
    created = await client.responses.create(model="gpt-5-nano", input=DOC_A, background=True)
    assert (await wait_for(client, created.id)).status == "completed"
    await asyncio.sleep(0.4)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)
    assert emu.stats()["background"]["expired"] == 1
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve("resp_doesnotexist")


async def test_background_flex_capacity_checked_at_create(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(flex_capacity=1, latency_s=2.0)
    await client.responses.create(model="gpt-5", input=DOC_A, background=True, service_tier="flex")
    with pytest.raises(openai.RateLimitError) as info:
        await client.responses.create(model="gpt-5", input=DOC_B, background=True, service_tier="flex")
    assert info.value.code == "resource_unavailable"


# ---------------------------------------------------------------------------------------- stats


async def test_per_input_accounting(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(unavailable_rate=1.0)
    with pytest.raises(openai.RateLimitError):
        await client.responses.create(model="gpt-5", input=DOC_A, service_tier="flex", instructions="One.")
    emu.update(unavailable_rate=0.0)
    await client.responses.create(model="gpt-5", input=DOC_A, service_tier="flex", instructions="Two.")
    # Same user text in message form: same key (instructions and system messages excluded).
    await client.responses.create(
        model="gpt-5",
        input=[
            {"role": "developer", "content": "Three."},
            {"role": "user", "content": [{"type": "input_text", "text": DOC_B}]},
        ],
    )
    await client.chat.completions.create(
        model="gpt-5", messages=[{"role": "system", "content": "Four."}, {"role": "user", "content": DOC_B}]
    )
    stats = emu.stats()
    assert stats["inputs"][key_of(DOC_A)] == {"requests": 2, "succeeded": 1, "statuses": [429, 200]}
    assert stats["inputs"][key_of(DOC_B)] == {"requests": 2, "succeeded": 2, "statuses": [200, 200]}
    assert stats["requests"] == 4
    assert stats["by_tier"] == {"flex": 2, "auto": 2}
    assert stats["by_status"] == {"429": 1, "200": 3}
    assert stats["by_error_code"] == {"resource_unavailable": 1}
    assert stats["by_endpoint"]["chat.completions.create"] == 1
    emu.reset()
    assert emu.stats()["inputs"] == {} and emu.stats()["requests"] == 0


async def test_control_endpoints_over_http(emu: EmulatorServer) -> None:
    async with httpx.AsyncClient(base_url=emu.url) as http:
        cfg = (await http.get("/emulator/config")).json()
        assert cfg["api_key"] == "***" and cfg["flex_capacity"] is None
        updated = await http.post("/emulator/config", json={"flex_capacity": 3, "unavailable_rate": 0.25})
        assert updated.status_code == 200 and updated.json()["flex_capacity"] == 3
        assert emu.config.unavailable_rate == 0.25
        assert (await http.post("/emulator/config", json={"no_such_knob": 1})).status_code == 400
        assert (await http.post("/emulator/config", json={"error_rate": 2})).status_code == 400
        stats = (await http.get("/emulator/stats")).json()
        assert {"requests", "by_tier", "by_status", "by_tier_status", "inputs", "background"} <= set(stats)
        assert (await http.post("/emulator/reset")).json() == {"ok": True}


# ---------------------------------------------------------------------------------------- usage


async def test_usage_numbers_and_prompt_cache(client: openai.AsyncOpenAI) -> None:
    instructions = "You are a meticulous analyst. " * 70  # 2100 chars ~ 525 tokens
    call = dict(model="gpt-5-mini", instructions=instructions)
    first = await client.responses.create(input=DOC_A, service_tier="flex", **call)
    u1 = first.usage
    assert u1 is not None
    expected_in = (len(instructions) + len(DOC_A)) / 4
    assert expected_in <= u1.input_tokens <= expected_in + 10
    assert u1.output_tokens >= u1.output_tokens_details.reasoning_tokens > 0
    assert u1.total_tokens == u1.input_tokens + u1.output_tokens
    assert u1.input_tokens_details.cached_tokens == 0

    second = await client.responses.create(input=DOC_B, service_tier="flex", **call)
    assert second.usage is not None
    cached = second.usage.input_tokens_details.cached_tokens
    assert cached == 512 and cached % 128 == 0 and cached <= second.usage.input_tokens

    switched = await client.responses.create(input=DOC_B, service_tier="default", **call)
    assert switched.usage is not None and switched.usage.input_tokens_details.cached_tokens == 0
    diagnostics = switched.prompt_cache_diagnostics
    assert diagnostics is not None and diagnostics.type == "cache_miss"
    assert diagnostics.reason == "service_tier_changed"
    again = await client.responses.create(input=DOC_A, service_tier="default", **call)
    assert again.usage is not None and again.usage.input_tokens_details.cached_tokens == 512

    short = await client.responses.create(model="gpt-4.1", input=DOC_A, instructions="Be brief.")
    short2 = await client.responses.create(model="gpt-4.1", input=DOC_A, instructions="Be brief.")
    assert short2.usage is not None and short2.usage.input_tokens_details.cached_tokens == 0  # too short
    assert short.usage is not None and short.usage.output_tokens_details.reasoning_tokens == 0


async def test_max_output_tokens_makes_response_incomplete(client: openai.AsyncOpenAI) -> None:
    resp = await client.responses.create(model="gpt-4.1", input=DOC_A, max_output_tokens=16, service_tier="default")
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None and resp.incomplete_details.reason == "max_output_tokens"
    assert resp.usage is not None and resp.usage.output_tokens <= 16
    chat = await client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": DOC_A}], max_completion_tokens=5
    )
    assert chat.choices[0].finish_reason == "length"


async def test_seeded_decisions_are_reproducible(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    async def pattern() -> list[int]:
        out = []
        for i in range(16):
            try:
                await client.responses.create(model="gpt-5-nano", input=f"doc {i}", service_tier="flex")
                out.append(200)
            except openai.APIStatusError as exc:
                out.append(exc.status_code)
        return out

    emu.update(unavailable_rate=0.4, error_rate=0.2, latency_s=0.001, seed=42)
    first = await pattern()
    emu.reset()  # re-seeds the RNG
    assert await pattern() == first
    assert {429, 200} <= set(first)


def test_shutdown_answers_inflight_requests_quickly() -> None:
    answers: list[int] = []
    with serve_in_thread(EmulatorConfig(latency_s=30.0)) as emu:
        body = {"model": "gpt-5", "input": "slow", "service_tier": "flex"}
        worker = threading.Thread(
            target=lambda: answers.append(httpx.post(f"{emu.base_url}/responses", json=body, timeout=20).status_code)
        )
        worker.start()
        while emu.stats()["in_flight"] == 0:
            time.sleep(0.01)
        started = time.monotonic()
    worker.join(timeout=5)
    assert time.monotonic() - started < 2.0
    assert answers == [503]
    assert emu.stats()["by_status"] == {"503": 1}  # stats stay readable after stop


async def test_bodies_pass_full_sdk_model_validation(emu: EmulatorServer) -> None:
    """The SDK builds models without validating; validate fully so shape drift can't hide."""
    headers = {"authorization": f"Bearer {emu.config.api_key}"}
    async with httpx.AsyncClient(base_url=emu.base_url, headers=headers) as http:
        bodies = [
            {"model": "o3", "input": DOC_A, "service_tier": "flex", "instructions": "x" * 2000},
            {"model": "o3", "input": DOC_B, "service_tier": "flex", "instructions": "x" * 2000},
            {"model": "gpt-4.1", "input": [{"role": "user", "content": DOC_B}], "max_output_tokens": 3},
            {"model": "gpt-5", "input": DOC_A, "background": True},
        ]
        for body in bodies:
            Response.model_validate((await http.post("/responses", json=body)).json())
        chat = await http.post(
            "/chat/completions", json={"model": "o3", "messages": [{"role": "user", "content": "q"}]}
        )
        ChatCompletion.model_validate(chat.json())
        for model in (await http.get("/models")).json()["data"]:
            Model.model_validate(model)


async def test_stored_responses_do_not_pile_up(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(background_expiry_s=0.0, standard_latency_s=0.0)
    for i in range(5):
        await client.responses.create(model="gpt-4.1", input=f"doc {i}")
    assert len(emu.state.store.items) <= 1  # swept on every add, not only on retrieve
    assert emu.stats()["background"]["expired"] == 0  # foreground responses are not counted
