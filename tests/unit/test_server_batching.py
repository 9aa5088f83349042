"""The dynamic batching policy (pure) and the asyncio batcher around it (no gRPC)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from lipsync_server.batching import (
    BatchingPolicy,
    BatchTimings,
    DeadlineExceededError,
    Decision,
    DynamicBatcher,
    QueueFullError,
)

pytestmark = pytest.mark.unit


def test_empty_queue_waits_forever() -> None:
    assert BatchingPolicy(8, 1000).decide(0, 0.0) == Decision(0)


def test_full_batch_dispatches_at_once() -> None:
    assert BatchingPolicy(4, 10_000).decide(4, 0.0) == Decision(4)
    assert BatchingPolicy(4, 10_000).decide(9, 0.0) == Decision(4)


def test_partial_batch_waits_for_the_rest_of_the_delay() -> None:
    decision = BatchingPolicy(8, 4000).decide(3, 1000.0)
    assert decision.size == 0
    assert decision.wait_us == pytest.approx(3000.0)


def test_partial_batch_dispatches_when_the_oldest_has_waited_long_enough() -> None:
    assert BatchingPolicy(8, 4000).decide(3, 4000.0) == Decision(3)


def test_zero_delay_dispatches_whatever_is_queued() -> None:
    assert BatchingPolicy(8, 0).decide(1, 0.0) == Decision(1)


def test_largest_formable_preferred_size_dispatches_without_waiting() -> None:
    policy = BatchingPolicy(8, 100_000, preferred_batch_sizes=(2, 4))
    assert policy.decide(5, 0.0) == Decision(4)
    assert policy.decide(3, 0.0) == Decision(2)
    assert policy.decide(1, 0.0).size == 0


class _Recorder:
    """A stand-in model: doubles its inputs, records batch sizes, takes ``seconds`` per batch."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.seconds = seconds

    async def prepare(self, payloads: list[int]) -> list[int]:
        return payloads

    async def infer(self, instance: int, batch: list[int]) -> Sequence[int]:
        self.batches.append(batch)
        await asyncio.sleep(self.seconds)
        return [2 * value for value in batch]


def _batcher(
    model: _Recorder,
    *,
    max_batch: int = 4,
    delay_us: int = 20_000,
    queue: int = 16,
    instances: int = 1,
) -> DynamicBatcher[int, list[int], int]:
    return DynamicBatcher(
        BatchingPolicy(max_batch, delay_us),
        max_queue_size=queue,
        instances=instances,
        prepare=model.prepare,
        infer=model.infer,
    )


def test_concurrent_requests_share_batches_and_get_their_own_results() -> None:
    async def scenario() -> None:
        model = _Recorder()
        batcher = _batcher(model)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(value) for value in range(10)))
        await batcher.close()
        assert [result for result, _, _ in results] == [2 * value for value in range(10)]
        assert [len(batch) for batch in model.batches] == [4, 4, 2]
        assert all(isinstance(timings, BatchTimings) for _, _, timings in results)

    asyncio.run(scenario())


def test_full_queue_rejects_at_once() -> None:
    async def scenario() -> None:
        model = _Recorder(seconds=0.2)
        batcher = _batcher(model, max_batch=1, delay_us=0, queue=2)
        batcher.start()
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)  # the first is running; the queue is empty again
        queued = [asyncio.create_task(batcher.submit(value)) for value in (1, 2)]
        await asyncio.sleep(0)
        started = time.monotonic()
        with pytest.raises(QueueFullError):
            await batcher.submit(3)
        assert time.monotonic() - started < 0.05
        await asyncio.gather(first, *queued)
        await batcher.close()

    asyncio.run(scenario())


def test_cancelled_requests_free_their_slot_and_never_run() -> None:
    async def scenario() -> None:
        model = _Recorder(seconds=0.1)
        batcher = _batcher(model, max_batch=1, delay_us=0, queue=4)
        batcher.start()
        running = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.02)
        doomed = asyncio.create_task(batcher.submit(99))
        await asyncio.sleep(0)
        doomed.cancel()
        survivor = await batcher.submit(5)
        await running
        await batcher.close()
        assert survivor[0] == 10
        assert [99] not in model.batches

    asyncio.run(scenario())


def test_expired_deadline_fails_before_inference() -> None:
    async def scenario() -> None:
        model = _Recorder(seconds=0.1)
        batcher = _batcher(model, max_batch=1, delay_us=0)
        batcher.start()
        running = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.02)
        with pytest.raises(DeadlineExceededError):
            await batcher.submit(7, deadline=time.monotonic() + 0.01)
        await running
        await batcher.close()
        assert [7] not in model.batches

    asyncio.run(scenario())


def test_instances_run_batches_in_parallel() -> None:
    async def scenario() -> None:
        model = _Recorder(seconds=0.2)
        batcher = _batcher(model, max_batch=2, delay_us=0, instances=2)
        batcher.start()
        started = time.monotonic()
        await asyncio.gather(*(batcher.submit(value) for value in range(4)))
        elapsed = time.monotonic() - started
        await batcher.close()
        assert sorted(len(batch) for batch in model.batches) == [2, 2]
        assert elapsed < 0.35  # two batches of 0.2 s overlapped

    asyncio.run(scenario())
