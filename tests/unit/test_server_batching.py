"""The dynamic batching policy (pure) and the asyncio batcher around it (no gRPC)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from lipsync_server.batching import CALLER, BatchingPolicy, BatchTimings, Decision, DynamicBatcher
from lipsync_server.errors import DeadlineExceededError, QueueFullError

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


class _Clock:
    """A clock the test moves by hand (the batcher's ``clock``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _GatedModel:
    """A stand-in model: doubles its inputs and records batches; with ``gated``, each batch
    waits until the test calls ``release`` (so the test, not sleeps, orders events)."""

    def __init__(self, gated: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0
        self._gated = gated
        self._release = asyncio.Semaphore(0)
        self._started = asyncio.Condition()

    async def prepare(self, payloads: list[int]) -> list[int]:
        return payloads

    async def infer(self, instance: int, batch: list[int]) -> Sequence[int]:
        self.batches.append(batch)
        async with self._started:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self._started.notify_all()
        if self._gated:
            await self._release.acquire()
        self.running -= 1
        return [2 * value for value in batch]

    async def wait_running(self, count: int) -> None:
        async with self._started:
            await self._started.wait_for(lambda: self.running >= count)

    def release(self, batches: int = 1) -> None:
        for _ in range(batches):
            self._release.release()


def _batcher(
    model: _GatedModel,
    *,
    max_batch: int = 4,
    delay_us: int = 20_000,
    queue: int = 16,
    instances: int = 1,
    clock: _Clock | None = None,
) -> DynamicBatcher[int, list[int], int]:
    return DynamicBatcher(
        BatchingPolicy(max_batch, delay_us),
        max_queue_size=queue,
        instances=instances,
        prepare=model.prepare,
        infer=model.infer,
        clock=clock or _Clock(),
    )


async def _settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(20):
        await asyncio.sleep(0)


def test_concurrent_requests_share_batches_and_get_their_own_results() -> None:
    async def scenario() -> None:
        model = _GatedModel()
        batcher = _batcher(model, delay_us=0)
        batcher.start()
        # All ten are queued before the collector runs: full batches, then the rest.
        results = await asyncio.gather(*(batcher.submit(value) for value in range(10)))
        await batcher.close()
        assert [result for result, _, _ in results] == [2 * value for value in range(10)]
        assert [len(batch) for batch in model.batches] == [4, 4, 2]
        assert all(isinstance(timings, BatchTimings) for _, _, timings in results)

    asyncio.run(scenario())


def test_full_queue_rejects_at_once() -> None:
    async def scenario() -> None:
        model = _GatedModel(gated=True)
        batcher = _batcher(model, max_batch=1, delay_us=0, queue=2)
        batcher.start()
        first = asyncio.create_task(batcher.submit(0))
        await model.wait_running(1)  # the first is running; the queue is empty again
        # The collector prepares the next batches while the first runs; the rest fill the queue.
        queued: list[asyncio.Task[tuple[int, float, BatchTimings]]] = []
        while batcher.queue_depth < 2:
            queued.append(asyncio.create_task(batcher.submit(len(queued) + 1)))
            await _settle()
            assert len(queued) <= 8
        with pytest.raises(QueueFullError):
            await batcher.submit(99)  # raised before the call ever waits
        model.release(len(queued) + 1)
        results = await asyncio.gather(first, *queued)
        assert [result for result, _, _ in results] == [2 * v for v in range(len(queued) + 1)]
        assert [99] not in model.batches
        await batcher.close()

    asyncio.run(scenario())


def test_cancelled_requests_free_their_slot_and_never_run() -> None:
    async def scenario() -> None:
        model = _GatedModel(gated=True)
        batcher = _batcher(model, max_batch=1, delay_us=0, queue=4)
        batcher.start()
        running = asyncio.create_task(batcher.submit(0))
        await model.wait_running(1)
        doomed = asyncio.create_task(batcher.submit(99))
        await _settle()
        doomed.cancel()
        survivor = asyncio.create_task(batcher.submit(5))
        await _settle()
        model.release(2)
        assert (await survivor)[0] == 10
        await running
        await batcher.close()
        assert [99] not in model.batches
        assert model.batches == [[0], [5]]

    asyncio.run(scenario())


def test_expired_deadline_fails_before_inference() -> None:
    async def scenario() -> None:
        clock = _Clock()
        model = _GatedModel(gated=True)
        batcher = _batcher(model, max_batch=1, delay_us=0, clock=clock)
        batcher.start()
        running = asyncio.create_task(batcher.submit(0))
        await model.wait_running(1)
        late = asyncio.create_task(batcher.submit(7, deadline=clock.now + 0.01))
        await _settle()
        clock.now += 0.02  # the deadline passes while 7 is queued behind the running batch
        model.release()
        with pytest.raises(DeadlineExceededError, match=r"after 0\.020 s in the batch queue"):
            await late
        await running
        await batcher.close()
        assert [7] not in model.batches

    asyncio.run(scenario())


def test_instances_run_batches_in_parallel() -> None:
    async def scenario() -> None:
        model = _GatedModel(gated=True)
        batcher = _batcher(model, max_batch=2, delay_us=0, instances=2)
        batcher.start()
        calls = asyncio.gather(*(batcher.submit(value) for value in range(4)))
        await model.wait_running(2)  # both batches run at once, neither has finished
        model.release(2)
        await calls
        await batcher.close()
        assert sorted(len(batch) for batch in model.batches) == [2, 2]
        assert model.most_running == 2

    asyncio.run(scenario())


def test_a_batch_takes_each_callers_requests_in_turn() -> None:
    async def scenario() -> None:
        model = _GatedModel(gated=True)
        batcher = _batcher(model, max_batch=4, delay_us=0)
        batcher.start()

        async def submit(caller: str, value: int) -> tuple[int, float, BatchTimings]:
            CALLER.set(caller)  # this task's own context
            return await batcher.submit(value)

        first = asyncio.create_task(submit("flood", 0))
        await model.wait_running(1)  # the queue fills while the first batch runs
        # Queued together, before the collector forms the next batch.
        flood = [asyncio.create_task(submit("flood", value)) for value in range(1, 9)]
        victim = asyncio.create_task(submit("victim", 100))
        await _settle()
        model.release(4)
        await asyncio.gather(first, *flood, victim)
        await batcher.close()
        # The victim's one request rides in the next batch, not behind the flood's eight; one
        # caller's requests keep their order.
        assert model.batches[1] == [1, 100, 2, 3]
        assert model.batches[2:] == [[4, 5, 6, 7], [8]]

    asyncio.run(scenario())
