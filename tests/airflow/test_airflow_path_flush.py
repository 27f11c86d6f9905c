"""Workers do not queue behind a checkpoint being written (found with ``benchmarks/airflow_path.py``).

Each worker flushes once ``flush_every`` records are buffered. It used to wait for a flush already
under way and then write one of its own, so every worker finishing during a slow write (object
storage, a loaded machine, a triggerer's busy event loop) joined a queue: hundreds of near-empty
checkpoints in a row, each a thread round trip, with half of the 200 workers idle in that queue
instead of sending (the engine's own progress line showed "in flight 68-129" of 200). Here the
first checkpoint is made slow on purpose and everything is counted, not timed.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.airflow.conftest import API_KEY
from tests.integration.helpers import make_engine, make_items, records

pytestmark = [pytest.mark.integration]


async def test_workers_keep_sending_while_a_checkpoint_is_written(emu, tmp_path) -> None:
    n = 60
    engine = make_engine(emu, tmp_path, API_KEY, max_concurrency=8, flush_every=1)
    real_write = engine._write_checkpoint
    batches: list[int] = []
    buffered_during_first_write: list[int] = []

    def slow_first_write(batch: list[Any], progress: Any) -> None:  # in the flush thread
        if not buffered_during_first_write:  # the first checkpoint lasts until 20 more records are buffered
            deadline = time.monotonic() + 5  # (before the fix they never were: every worker waited)
            while len(engine._buffer) < 20 and time.monotonic() < deadline:
                time.sleep(0.005)
            buffered_during_first_write.append(len(engine._buffer))
        batches.append(len(batch))
        real_write(batch, progress)

    engine._write_checkpoint = slow_first_write  # type: ignore[method-assign]
    summary = await engine.run(make_items(n), total=n)
    assert summary["succeeded"] == n
    assert sum(batches) == n and len(records(tmp_path)) == n  # every record written exactly once
    # The workers went on sending while the first checkpoint was written, and the next checkpoint
    # took what they had finished in the meantime (before: 1 record each, the workers in a queue).
    assert buffered_during_first_write[0] >= 20, batches
    assert max(batches) >= 20, batches
    assert batches.count(0) <= 2, batches  # progress-only checkpoints: the ticker's, the final one
