from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from flex_provider.engine.calls import CallBuilder, Reply, output_text
from flex_provider.engine.config import RequestSpec
from flex_provider.engine.errors import FlexInputError, MalformedResponseError, OutputValidationError, Verdict, classify
from flex_provider.engine.usage import Usage

SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["spam", "ham"]},
        "score": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["label", "score", "tags"],
    "additionalProperties": False,
}


def make_response(
    text: str, *, tier: str | None = "flex", rid: str = "resp_1", status: str = "completed", why: str | None = None
) -> Response:
    return Response.model_validate(
        {
            "id": rid,
            "object": "response",
            "created_at": 0,
            "model": "o3",
            "status": status,
            "incomplete_details": {"reason": why} if why else None,
            "service_tier": tier,
            "output": [
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "parallel_tool_calls": False,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": 100,
                "input_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 0},
                "output_tokens": 20,
                "output_tokens_details": {"reasoning_tokens": 8},
                "total_tokens": 120,
            },
        }
    )


def make_completion(
    content: str | None, *, refusal: str | None = None, tier: str | None = "flex", finish: str = "stop"
) -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl_1",
            "object": "chat.completion",
            "created": 0,
            "model": "o3",
            "service_tier": tier,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish,
                    "message": {"role": "assistant", "content": content, "refusal": refusal},
                }
            ],
            "usage": {"prompt_tokens": 30, "completion_tokens": 6, "total_tokens": 36},
        }
    )


class FakeClient:
    """Records the keyword arguments of create() calls and answers with a canned object."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.responses = _Endpoint(self, "responses")
        self.chat = type("Chat", (), {"completions": _Endpoint(self, "chat")})()


class _Endpoint:
    def __init__(self, client: FakeClient, name: str) -> None:
        self.client, self.name = client, name

    async def create(self, **kwargs: Any) -> Any:
        self.client.calls.append((self.name, kwargs))
        return self.client.answer


# -- kwargs -------------------------------------------------------------------------------------


def test_responses_kwargs_plain():
    builder = CallBuilder(RequestSpec(model="o3", timeout=60, prompt_cache_key=None))
    assert builder.kwargs("Hello", "flex") == {"model": "o3", "input": "Hello", "service_tier": "flex", "timeout": 60}


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_prompt_cache_key_auto_is_the_same_for_the_same_question(api):
    """Every request of a run, and of the next night's run of the same task, shares one cache key, so
    the shared instructions land on the same prompt cache; another question gets another key."""
    spec = RequestSpec(model="o3", api=api, instructions="Classify the ticket.")
    key = CallBuilder(spec).kwargs("one", "flex")["prompt_cache_key"]
    assert (
        key
        == CallBuilder(RequestSpec(model="o3", api=api, instructions="Classify the ticket.")).kwargs("two", "default")[
            "prompt_cache_key"
        ]
    )
    assert key.startswith("flex-")
    other = RequestSpec(model="o3", api=api, instructions="Summarise the ticket.")
    assert CallBuilder(other).kwargs("one", "flex")["prompt_cache_key"] != key


def test_prompt_cache_key_given_none_or_in_request_options():
    assert (
        CallBuilder(RequestSpec(model="o3", prompt_cache_key="tickets")).kwargs("x", "flex")["prompt_cache_key"]
        == "tickets"
    )
    assert "prompt_cache_key" not in CallBuilder(RequestSpec(model="o3", prompt_cache_key=None)).kwargs("x", "flex")
    mine = RequestSpec(model="o3", request_options={"prompt_cache_key": "mine"})
    assert CallBuilder(mine).kwargs("x", "flex")["prompt_cache_key"] == "mine"


def test_prompt_cache_key_is_not_part_of_the_fingerprint():
    """Folders written before the key existed, or with another key, hold the same answers."""
    assert RequestSpec(model="o3", prompt_cache_key="a").fingerprint() == RequestSpec(model="o3").fingerprint()
    with pytest.raises(FlexInputError, match="prompt_cache_key"):
        RequestSpec(model="o3", prompt_cache_key="")


def test_responses_kwargs_with_instructions_options_and_background():
    spec = RequestSpec(
        model="o3", instructions="Be brief.", request_options={"max_output_tokens": 50}, prompt_cache_key=None
    )
    kw = CallBuilder(spec).kwargs("Hi", "default", background=True)
    assert kw == {
        "model": "o3",
        "input": "Hi",
        "service_tier": "default",
        "instructions": "Be brief.",
        "background": True,
        "max_output_tokens": 50,
        "timeout": 900.0,
    }


def test_responses_structured_output_uses_text_format_json_schema_strict():
    spec = RequestSpec(
        model="o3",
        response_schema=SCHEMA,
        schema_name="verdict",
        request_options={"text": {"verbosity": "low"}},
    )
    kw = CallBuilder(spec).kwargs("Is this spam?", "flex")
    assert kw["text"] == {
        "verbosity": "low",  # the user's other text options are kept
        "format": {"type": "json_schema", "name": "verdict", "schema": SCHEMA, "strict": True},
    }
    assert "response_format" not in kw
    assert spec.request_options == {"text": {"verbosity": "low"}}  # spec not mutated


def test_chat_kwargs_instructions_as_developer_message():
    spec = RequestSpec(model="o3", api="chat", instructions="Answer in French.", timeout=12.5, prompt_cache_key="k")
    kw = CallBuilder(spec).kwargs("Hello", "flex")
    assert kw == {
        "model": "o3",
        "messages": [
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "Hello"},
        ],
        "service_tier": "flex",
        "prompt_cache_key": "k",
        "timeout": 12.5,
    }


def test_chat_kwargs_without_instructions_and_never_background():
    kw = CallBuilder(RequestSpec(model="o3", api="chat")).kwargs("Hello", "flex", background=True)
    assert kw["messages"] == [{"role": "user", "content": "Hello"}]
    assert "background" not in kw
    assert "input" not in kw


def test_chat_structured_output_uses_response_format():
    spec = RequestSpec(model="o3", api="chat", response_schema=SCHEMA, request_options={"temperature": 0})
    kw = CallBuilder(spec).kwargs("x", "flex")
    assert kw["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "result", "schema": SCHEMA, "strict": True},
    }
    assert kw["temperature"] == 0
    assert "text" not in kw


def test_kwargs_do_not_leak_between_calls():
    builder = CallBuilder(RequestSpec(model="o3", api="chat", instructions="I"))
    first = builder.kwargs("one", "flex")
    first["messages"].append({"role": "user", "content": "extra"})
    assert builder.kwargs("two", "default")["messages"] == [
        {"role": "developer", "content": "I"},
        {"role": "user", "content": "two"},
    ]


# -- parsing ------------------------------------------------------------------------------------


def test_parse_without_schema_returns_text():
    assert CallBuilder(RequestSpec(model="o3"))._parse("not json") == "not json"


def test_parse_valid_json():
    value = {"label": "spam", "score": 0.9, "tags": ["a"]}
    assert CallBuilder(RequestSpec(model="o3", response_schema=SCHEMA))._parse(json.dumps(value)) == value


def test_parse_invalid_json():
    builder = CallBuilder(RequestSpec(model="o3", response_schema=SCHEMA))
    with pytest.raises(OutputValidationError, match=r"^output is not valid JSON: Expecting value at column 1$"):
        builder._parse("Sure! Here is your JSON")


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        # In the schema's words only: the output's values never appear (they may be private data).
        ({"label": "spam", "score": "high", "tags": []}, r"at score: fails the schema's 'type': 'number'$"),
        ({"label": "eggs", "score": 1, "tags": []}, r"at label: fails the schema's 'enum': \['spam', 'ham'\]$"),
        ({"label": "ham", "score": 1, "tags": ["ok", 3]}, r"at tags/1: fails the schema's 'type': 'string'$"),
        ({"label": "ham", "score": 1}, r"at <root>: missing required property 'tags'$"),
    ],
)
def test_parse_schema_mismatch_names_the_path(value, pattern):
    builder = CallBuilder(RequestSpec(model="o3", response_schema=SCHEMA))
    with pytest.raises(OutputValidationError, match=r"^output does not match response_format " + pattern):
        builder._parse(json.dumps(value))


def test_read_response_success():
    builder = CallBuilder(RequestSpec(model="o3", response_schema=SCHEMA))
    reply = builder.read_response(make_response('{"label": "ham", "score": 0.1, "tags": []}', rid="resp_9"))
    assert reply == Reply(
        output={"label": "ham", "score": 0.1, "tags": []},
        service_tier="flex",
        usage=Usage(input=100, cached=40, output=20, reasoning=8),
        response_id="resp_9",
        model="o3",  # as the server reports it
    )


def test_invalid_output_error_carries_usage_and_tier():
    builder = CallBuilder(RequestSpec(model="o3", response_schema=SCHEMA))
    with pytest.raises(OutputValidationError) as info:
        builder.read_response(make_response("{not json", tier="default"))
    assert info.value.usage == Usage(input=100, cached=40, output=20, reasoning=8)
    assert info.value.service_tier == "default"
    assert classify(info.value) is Verdict.ITEM_FAILED


def test_read_chat_success_and_empty_content():
    builder = CallBuilder(RequestSpec(model="o3", api="chat"))
    reply = builder.read_chat(make_completion("Bonjour"))
    assert reply == Reply("Bonjour", "flex", Usage(input=30, output=6), "chatcmpl_1", "o3")
    assert builder.read_chat(make_completion(None)).output == ""


def test_read_chat_refusal_fails_the_item():
    builder = CallBuilder(RequestSpec(model="o3", api="chat", response_schema=SCHEMA))
    with pytest.raises(
        OutputValidationError, match=r"^the model refused to answer \(its refusal text is not recorded\)$"
    ):
        builder.read_chat(make_completion(None, refusal="I can't help with that."))


def test_read_chat_refusal_carries_usage_and_tier():
    builder = CallBuilder(RequestSpec(model="o3", api="chat"))
    with pytest.raises(OutputValidationError) as info:
        builder.read_chat(make_completion(None, refusal="No.", tier="flex"))
    assert info.value.usage == Usage(input=30, output=6)
    assert info.value.service_tier == "flex"


def test_an_answer_cut_short_at_the_output_bound_fails_the_item_billed_not_retryable():
    """Inline mode recorded a truncated text as a success (background mode failed it): both now fail
    it the same way, billed, with what to do, and never record the truncated text."""
    builder = CallBuilder(RequestSpec(model="o3"))
    cut = make_response("Summary: the invoice is wr", status="incomplete", why="max_output_tokens")
    with pytest.raises(OutputValidationError) as info:
        builder.read_response(cut)
    message = str(info.value)
    assert message.startswith("the answer was cut short (incomplete: max_output_tokens): raise max_output_tokens")
    assert "redo_failed='all'" in message and "invoice" not in message
    assert info.value.usage == Usage(input=100, cached=40, output=20, reasoning=8)
    assert info.value.service_tier == "flex" and info.value.model == "o3"
    assert classify(info.value) is Verdict.ITEM_FAILED  # the same bound would cut it again


def test_a_chat_answer_cut_short_by_length_fails_the_item():
    builder = CallBuilder(RequestSpec(model="o3", api="chat"))
    with pytest.raises(
        OutputValidationError, match=r"cut short \(finish_reason: length\): raise max_completion_tokens"
    ):
        builder.read_chat(make_completion("Bonjour, je", finish="length"))
    assert builder.read_chat(make_completion("Bonjour")).output == "Bonjour"  # "stop" is a whole answer


# -- send -------------------------------------------------------------------------------------


async def test_send_responses():
    client = FakeClient(make_response("plain answer"))
    builder = CallBuilder(RequestSpec(model="o3", instructions="Be nice.", timeout=30, prompt_cache_key=None))
    reply = await builder.send(client, "Hi", "flex")
    assert reply.output == "plain answer"
    assert client.calls == [
        (
            "responses",
            {"model": "o3", "input": "Hi", "service_tier": "flex", "instructions": "Be nice.", "timeout": 30},
        )
    ]


async def test_send_chat():
    client = FakeClient(make_completion('{"label": "spam", "score": 1, "tags": ["x"]}', tier="default"))
    builder = CallBuilder(RequestSpec(model="o3", api="chat", response_schema=SCHEMA))
    reply = await builder.send(client, "Hi", "flex")
    assert reply.output == {"label": "spam", "score": 1, "tags": ["x"]}
    assert reply.service_tier == "default"  # as served, not as asked
    name, kwargs = client.calls[0]
    assert name == "chat"
    assert kwargs["service_tier"] == "flex"
    assert kwargs["response_format"]["json_schema"]["strict"] is True


@pytest.mark.parametrize(
    ("api", "body", "pattern"),
    [
        ("responses", None, r"got null"),
        ("responses", "<html>Bad gateway</html>", r"got text"),
        ("responses", {"id": "resp_1", "object": "response"}, r"without 'output'"),
        ("chat", None, r"got null"),
        ("chat", "<html>oops</html>", r"got text"),
        ("chat", {"id": "c1", "object": "chat.completion"}, r"'choices'"),
        ("chat", {"id": "c1", "object": "chat.completion", "choices": []}, r"'choices'"),
    ],
)
def test_malformed_200_bodies_are_transient_item_errors_not_internal_errors(api, body, pattern):
    """Unattended nights #2: what the SDK hands back for a garbled 200 (None, the text, a model
    built without its fields) raises MalformedResponseError, which is retried, not an AttributeError
    that stops the run."""
    builder = CallBuilder(RequestSpec(model="o3", api=api))
    if isinstance(body, dict):
        body = (Response if api == "responses" else ChatCompletion).construct(**body)
    read = builder.read_response if api == "responses" else builder.read_chat
    with pytest.raises(MalformedResponseError, match=r"^malformed 200 answer: .*" + pattern) as info:
        read(body)
    assert classify(info.value) is Verdict.TRANSIENT


def test_sdk_json_errors_on_a_200_are_transient():
    assert classify(json.JSONDecodeError("Expecting value", "", 0)) is Verdict.TRANSIENT
    response = httpx2.Response(200, request=httpx2.Request("POST", "http://x/v1/responses"), text="<html>")
    assert classify(openai.APIResponseValidationError(response, "<html>", message="bad")) is Verdict.TRANSIENT


# -- send without the typed layer (client.post) -----------------------------------------------------
# A real AsyncOpenAI over httpx2's MockTransport: the SDK's own request building, auth and status
# errors, no network.

RESPONSE_BODY = {
    "id": "resp_7",
    "object": "response",
    "created_at": 0,
    "model": "o3-2025-04-16",
    "status": "completed",
    "service_tier": "flex",
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "thinking"}]},
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": "Hello, ", "annotations": []},
                {"type": "refusal", "refusal": "not this"},
                {"type": "output_text", "text": "world", "annotations": []},
            ],
        },
        {
            "type": "message",
            "id": "msg_2",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "!", "annotations": []}],
        },
    ],
    "parallel_tool_calls": False,
    "tool_choice": "auto",
    "tools": [],
    "usage": {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 0},
        "output_tokens": 20,
        "output_tokens_details": {"reasoning_tokens": 8},
        "total_tokens": 120,
    },
}
CHAT_BODY = {
    "id": "chatcmpl_7",
    "object": "chat.completion",
    "created": 0,
    "model": "o3",
    "service_tier": "default",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Bonjour"}}],
    "usage": {
        "prompt_tokens": 30,
        "completion_tokens": 6,
        "total_tokens": 36,
        "prompt_tokens_details": {"cached_tokens": 2},
    },
}
LIMIT_HEADERS = {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499"}


class Server:
    """What the mock transport answers, and the requests it saw."""

    def __init__(self, status: int = 200, body: Any = RESPONSE_BODY, *, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers
        self.requests: list[httpx2.Request] = []

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key="sk-test",
            base_url="http://flex.test/v1",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self._answer)),
        )

    def _answer(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        headers = {**LIMIT_HEADERS, **(self.headers or {})}
        if isinstance(self.body, bytes):
            return httpx2.Response(self.status, content=self.body, headers=headers)
        return httpx2.Response(self.status, json=self.body, headers=headers)


def sent(request: httpx2.Request) -> dict[str, Any]:
    return {
        "url": str(request.url),
        "body": json.loads(request.content),
        "auth": request.headers.get("authorization"),
        "custom": request.headers.get("x-custom"),
        "timeout": request.extensions.get("timeout"),
    }


async def test_post_reads_a_responses_answer_as_the_typed_path_does():
    server = Server()
    builder = CallBuilder(RequestSpec(model="o3", timeout=30, prompt_cache_key=None))
    reply = await builder.send(server.client(), "Hi", "flex")
    typed = builder.read_response(Response.model_validate(RESPONSE_BODY))
    assert reply.output == typed.output == "Hello, world!"  # as the SDK's output_text joins them
    assert (reply.service_tier, reply.usage, reply.response_id, reply.model) == (
        typed.service_tier,
        typed.usage,
        typed.response_id,
        typed.model,
    )
    assert reply.usage == Usage(input=100, cached=40, output=20, reasoning=8)
    assert reply.limits.requests.limit == 500 and reply.limits.requests.remaining == 499
    assert sent(server.requests[0])["body"] == {"model": "o3", "input": "Hi", "service_tier": "flex"}


async def test_post_reads_a_chat_answer_as_the_typed_path_does():
    server = Server(body=CHAT_BODY)
    builder = CallBuilder(RequestSpec(model="o3", api="chat"))
    reply = await builder.send(server.client(), "Hi", "flex")
    typed = builder.read_chat(ChatCompletion.model_validate(CHAT_BODY))
    typed.limits = reply.limits
    assert (
        reply
        == typed
        == Reply("Bonjour", "default", Usage(input=30, cached=2, output=6), "chatcmpl_7", "o3", reply.limits)
    )
    assert reply.limits.requests.limit == 500
    assert str(server.requests[0].url) == "http://flex.test/v1/chat/completions"


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_post_sends_exactly_what_create_sends(api):
    """Body, URL (extra_query), headers (auth, extra_headers), merged extra_body and timeout: the
    same request as the SDK's typed create builds from the same keyword arguments."""
    spec = RequestSpec(
        model="o3",
        api=api,
        instructions="Be brief.",
        response_schema=SCHEMA,
        timeout=12.5,
        request_options={
            "metadata": {"run": "n1"},
            "extra_body": {"custom_field": [1, 2]},
            "extra_query": {"trace": "yes"},
            "extra_headers": {"X-Custom": "abc"},
        },
    )
    builder = CallBuilder(spec, default_output_bound=256)
    assert builder._plain
    via_post, via_create = Server(body=RESPONSE_BODY if api == "responses" else CHAT_BODY), None
    with pytest.raises(OutputValidationError):  # the canned answer is not the schema's: only the request matters
        await builder.send(via_post.client(), "Hi", "flex")
    via_create = Server(body=RESPONSE_BODY if api == "responses" else CHAT_BODY)
    client = via_create.client()
    typed_only = type("Typed", (), {"responses": client.responses, "chat": client.chat})()  # no post
    with pytest.raises(OutputValidationError):
        await builder.send(typed_only, "Hi", "flex")
    assert sent(via_post.requests[0]) == sent(via_create.requests[0])
    request = sent(via_post.requests[0])
    assert request["auth"] == "Bearer sk-test" and request["custom"] == "abc"
    assert request["url"].endswith("?trace=yes") and request["body"]["custom_field"] == [1, 2]


async def test_background_create_through_post():
    server = Server(body={"id": "resp_bg", "object": "response", "status": "queued", "output": []})
    created = await CallBuilder(RequestSpec(model="o3")).create_background(server.client(), "Hi", "flex")
    assert created.response_id == "resp_bg" and created.limits.requests.limit == 500
    assert sent(server.requests[0])["body"]["background"] is True
    server.body = {"object": "response", "status": "queued"}
    with pytest.raises(MalformedResponseError, match="without 'id'") as info:
        await CallBuilder(RequestSpec(model="o3")).create_background(server.client(), "Hi", "flex")
    assert info.value.limits.requests.limit == 500


async def test_an_option_create_does_not_take_still_raises_before_sending():
    """An unknown request option (a typo) keeps failing as the typed create fails, not as a 400 per item."""
    server = Server()
    builder = CallBuilder(RequestSpec(model="o3", request_options={"temprature": 0}))
    assert not builder._plain
    with pytest.raises(TypeError, match="temprature"):
        await builder.send(server.client(), "Hi", "flex")
    assert server.requests == []


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        (
            429,
            {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}},
            openai.RateLimitError,
            "rate_limit_exceeded",
        ),
        (
            401,
            {"error": {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}},
            openai.AuthenticationError,
            "invalid_api_key",
        ),
        (503, b"<html>Service Unavailable</html>", openai.InternalServerError, None),
    ],
)
async def test_post_raises_the_sdk_status_errors(status, body, error, code):
    server = Server(status, body, headers={"retry-after": "3"})
    with pytest.raises(error) as info:
        await CallBuilder(RequestSpec(model="o3")).send(server.client(), "Hi", "flex")
    assert info.value.status_code == status and info.value.code == code
    assert info.value.response.headers["retry-after"] == "3"


@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        (b"<html>Bad gateway</html>", r"got text"),
        (b"", r"got text"),
        (b'{"id": "resp_1", "outp', r"got text"),
        (b"\xff\xfe", r"got text"),
        (b"null", r"got null"),
        (b'"a string"', r"got text"),
        (b"[1, 2]", r"an object without"),
        (b'{"id": "x", "object": "response"}', r"an object without"),
        (b'{"choices": [], "output": null}', r"an object without"),
    ],
)
async def test_post_malformed_200s_are_transient_and_carry_the_headers(api, body, pattern):
    server = Server(body=body)
    with pytest.raises(MalformedResponseError, match=r"^malformed 200 answer: .*" + pattern) as info:
        await CallBuilder(RequestSpec(model="o3", api=api)).send(server.client(), "Hi", "flex")
    assert classify(info.value) is Verdict.TRANSIENT
    assert info.value.limits.requests.limit == 500


async def test_post_chat_content_that_is_not_text_is_malformed():
    body = {**CHAT_BODY, "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": {"x": 1}}}]}
    with pytest.raises(MalformedResponseError, match="'choices'"):
        await CallBuilder(RequestSpec(model="o3", api="chat")).send(Server(body=body).client(), "Hi", "flex")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}, "max_output_tokens"),
        ({"status": "incomplete", "incomplete_details": None}, "no reason given"),
    ],
)
async def test_post_incomplete_answer_is_cut_short_billed(body, expected):
    server = Server(body={**RESPONSE_BODY, **body})
    with pytest.raises(OutputValidationError, match=rf"cut short \(incomplete: {expected}\)") as info:
        await CallBuilder(RequestSpec(model="o3")).send(server.client(), "Hi", "flex")
    assert info.value.usage == Usage(input=100, cached=40, output=20, reasoning=8)
    assert info.value.limits.requests.limit == 500


async def test_post_chat_refusal_and_length():
    refusal = {
        **CHAT_BODY,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": None, "refusal": "No."}}],
    }
    with pytest.raises(OutputValidationError, match="refused") as info:
        await CallBuilder(RequestSpec(model="o3", api="chat")).send(Server(body=refusal).client(), "Hi", "flex")
    assert info.value.usage == Usage(input=30, cached=2, output=6) and info.value.service_tier == "default"
    cut = {**CHAT_BODY, "choices": [{"index": 0, "finish_reason": "length", "message": {"content": "Bonj"}}]}
    with pytest.raises(OutputValidationError, match=r"finish_reason: length"):
        await CallBuilder(RequestSpec(model="o3", api="chat")).send(Server(body=cut).client(), "Hi", "flex")


def test_output_text_of_a_decoded_body_matches_the_sdk_property():
    odd = {
        **RESPONSE_BODY,
        "output": [
            *RESPONSE_BODY["output"],
            {"type": "message", "content": None},
            {"type": "message", "content": [{"type": "output_text", "text": None}, "junk"]},
            "junk",
        ],
    }
    assert output_text(RESPONSE_BODY) == Response.model_validate(RESPONSE_BODY).output_text == "Hello, world!"
    assert output_text(odd) == "Hello, world!"
    assert output_text({"output": []}) == ""


async def test_post_authenticates_as_create_does_never_with_an_admin_key():
    """``create`` asks for bearer auth only; ``post``'s default would also send an admin key (such as
    one the SDK picks up from OPENAI_ADMIN_KEY) when the connection has no API key."""
    server = Server()
    client = openai.AsyncOpenAI(
        api_key="",
        admin_api_key="sk-admin",
        base_url="http://flex.test/v1",
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(server._answer)),
    )
    with pytest.raises(TypeError, match="authentication"):
        await CallBuilder(RequestSpec(model="o3")).send(client, "Hi", "flex")
    assert server.requests == []
