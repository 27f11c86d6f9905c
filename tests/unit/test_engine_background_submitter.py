"""BackgroundSubmitter: create or re-attach, make the id durable before waiting, re-create on passing failures.

A real BackgroundPoller (interval 0) over a fake client whose ``responses.retrieve`` answers from a
script per response id; ``create`` and ``write_pending`` stand in for the engine's retrying call and
its storage write, and log what happened in order.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import openai
import pytest

from flex_provider.engine.attempt import ItemAttempt
from flex_provider.engine.background import BackgroundFailed, BackgroundPoller, BackgroundSubmitter, PendingEntry
from flex_provider.engine.calls import CallBuilder
from flex_provider.engine.config import RequestSpec
from flex_provider.engine.items import WorkItem
from flex_provider.engine.progress import RunCounters

from .helpers import make_api_error

KEY = "sk-test-background-0123456789"


def completed(rid: str, text: str = "ok") -> SimpleNamespace:
    return SimpleNamespace(
        id=rid, status="completed", output=[], output_text=text, service_tier="flex", usage=None, model="m-1"
    )


def failed(rid: str, code: str | None, message: str = "boom") -> SimpleNamespace:
    return SimpleNamespace(id=rid, status="failed", error=SimpleNamespace(code=code, message=message))


class Harness:
    """The submitter plus a log of ``create``/``write``/``retrieve`` events, in the order they happened."""

    def __init__(self, answers: Callable[[str], Any], max_attempts: int = 5) -> None:
        self.log: list[tuple[str, Any]] = []
        self.counters = RunCounters()
        self._ids = itertools.count(1)
        self._answers = answers

        async def retrieve(rid: str, timeout: float) -> Any:
            self.log.append(("retrieve", rid))
            answer = self._answers(rid)
            if isinstance(answer, BaseException):
                raise answer
            return answer

        client = SimpleNamespace(responses=SimpleNamespace(retrieve=retrieve))
        self.poller = BackgroundPoller(client, interval=0)
        self.submitter = BackgroundSubmitter(
            self.poller,
            CallBuilder(RequestSpec(model="gpt-5-mini")),
            self.counters,
            create=self.create,
            write_pending=self.write_pending,
            max_attempts=max_attempts,
            secrets=(KEY,),
        )

    async def create(self, attempt: ItemAttempt) -> str:
        attempt.attempts += 1  # the engine's retrying call counts requests
        rid = f"resp_{next(self._ids)}"
        self.log.append(("create", (attempt.item.id, attempt.requested_tier)))
        return rid

    async def write_pending(self, batch: list[PendingEntry]) -> None:
        await asyncio.sleep(0)  # a real write yields (it runs in a thread)
        self.log.append(("write", [dict(e) for e in batch]))

    def events(self) -> list[str]:
        return [kind for kind, _ in self.log]


def attempt(item_id: str = "a", prompt_hash: str = "h1", tier: str = "flex") -> ItemAttempt:
    return ItemAttempt(WorkItem(item_id, f"prompt {item_id}"), prompt_hash, tier)


def gone(rid: str) -> openai.NotFoundError:
    error = make_api_error(404, message=f"no response {rid}")
    assert isinstance(error, openai.NotFoundError)
    return error


async def test_creates_checkpoints_the_id_before_waiting_then_reads_the_answer():
    h = Harness(lambda rid: completed(rid, "answer"))
    a = attempt()
    reply = await h.submitter.answer(a)
    await h.submitter.close()

    assert reply.output == "answer" and reply.response_id == "resp_1" and reply.model == "m-1"
    assert h.events() == ["create", "write", "retrieve"]  # durable before the first poll
    assert h.log[1][1] == [{"id": "a", "response_id": "resp_1", "tier": "flex", "prompt_hash": "h1"}]
    assert h.counters.background_created == 1 and h.counters.background_reattached == 0
    assert a.attempts == 1


@pytest.mark.parametrize(
    "entry",
    [
        {"id": "a", "response_id": "resp_old", "tier": "flex", "prompt_hash": "h1"},
        {"id": "a", "response_id": "resp_old", "tier": "flex"},  # written before prompt hashes existed
        {"id": "a", "response_id": "resp_old", "tier": "flex", "prompt_hash": None},
    ],
)
async def test_reattaches_to_a_pending_entry_for_the_same_tier_and_prompt(entry):
    h = Harness(lambda rid: completed(rid))
    h.submitter.adopt({"a": entry})
    reply = await h.submitter.answer(attempt())
    await h.submitter.close()

    assert reply.response_id == "resp_old"
    assert h.log == [("retrieve", "resp_old")]  # nothing created, nothing written, nothing paid again
    assert h.counters.background_reattached == 1 and h.counters.background_created == 0


@pytest.mark.parametrize(
    "entry",
    [
        {"id": "a", "response_id": "resp_old", "tier": "flex", "prompt_hash": "another prompt"},
        {"id": "a", "response_id": "resp_old", "tier": "default", "prompt_hash": "h1"},
    ],
)
async def test_a_pending_entry_for_another_prompt_or_tier_is_not_reused(entry):
    h = Harness(lambda rid: completed(rid))
    h.submitter.adopt({"a": entry})
    reply = await h.submitter.answer(attempt())
    await h.submitter.close()

    assert reply.response_id == "resp_1"
    assert "resp_old" not in str(h.log)
    assert h.counters.background_reattached == 0 and h.counters.background_created == 1


async def test_an_entry_is_used_once_a_fallback_on_the_same_item_creates_anew():
    h = Harness(lambda rid: completed(rid))
    h.submitter.adopt({"a": {"id": "a", "response_id": "resp_old", "tier": "default", "prompt_hash": "h1"}})
    a = attempt()
    await h.submitter.answer(a)  # flex: the entry (default tier) does not match and is dropped
    a.requested_tier = "default"
    reply = await h.submitter.answer(a)
    await h.submitter.close()
    assert reply.response_id == "resp_2" and h.counters.background_reattached == 0


async def test_a_vanished_response_is_created_again():
    h = Harness(lambda rid: gone(rid) if rid == "resp_old" else completed(rid))
    h.submitter.adopt({"a": {"id": "a", "response_id": "resp_old", "tier": "flex", "prompt_hash": "h1"}})
    reply = await h.submitter.answer(attempt())
    await h.submitter.close()

    assert reply.response_id == "resp_1"
    assert h.events() == ["retrieve", "create", "write", "retrieve"]
    assert h.counters.background_reattached == 1 and h.counters.background_created == 1


@pytest.mark.parametrize("code", [None, "server_error", "resource_unavailable", "rate_limit_exceeded"])
async def test_a_failed_response_for_a_passing_reason_is_created_again(code):
    h = Harness(lambda rid: failed(rid, code) if rid == "resp_1" else completed(rid))
    a = attempt()
    reply = await h.submitter.answer(a)
    await h.submitter.close()

    assert reply.response_id == "resp_2"
    assert h.counters.transient_errors == 1 and h.counters.background_created == 2
    assert a.attempts == 2
    assert h.events() == ["create", "write", "retrieve", "create", "write", "retrieve"]


async def test_a_failed_response_for_the_requests_fault_fails_the_item_for_good():
    h = Harness(lambda rid: failed(rid, "invalid_prompt", f"bad prompt (key {KEY})"))
    with pytest.raises(BackgroundFailed) as caught:
        await h.submitter.answer(attempt())
    await h.submitter.close()

    assert caught.value.status == "failed" and caught.value.retryable is False
    assert KEY not in str(caught.value) and "bad prompt" in str(caught.value)
    assert h.counters.transient_errors == 0


async def test_an_incomplete_response_fails_with_its_reason():
    def answer(rid: str) -> SimpleNamespace:
        return SimpleNamespace(
            id=rid, status="incomplete", error=None, incomplete_details=SimpleNamespace(reason="max_output_tokens")
        )

    h = Harness(answer)
    with pytest.raises(BackgroundFailed, match="background response incomplete: max_output_tokens") as caught:
        await h.submitter.answer(attempt())
    await h.submitter.close()
    assert caught.value.retryable is False


async def test_the_budget_runs_out_on_failures_that_keep_passing_as_a_retryable_failure():
    h = Harness(lambda rid: failed(rid, "server_error"), max_attempts=3)
    with pytest.raises(BackgroundFailed, match="retry budget exhausted") as caught:
        await h.submitter.answer(attempt())
    await h.submitter.close()

    assert caught.value.retryable is True
    assert h.counters.background_created == 3 and h.counters.transient_errors == 3


async def test_concurrent_creates_share_writes_and_none_waits_before_its_id_is_written():
    h = Harness(lambda rid: completed(rid))
    replies = await asyncio.gather(*(h.submitter.answer(attempt(f"i{n}")) for n in range(8)))
    await h.submitter.close()

    assert sorted(r.response_id for r in replies) == sorted(f"resp_{n}" for n in range(1, 9))
    writes = [batch for kind, batch in h.log if kind == "write"]
    assert sum(len(batch) for batch in writes) == 8 and len(writes) < 8  # group commit
    written: set[str] = set()
    for kind, value in h.log:
        if kind == "write":
            written.update(entry["response_id"] for entry in value)
        elif kind == "retrieve":
            assert value in written  # polled only once durable
