"""Dynamic batching with Triton's semantics.

``BatchingPolicy.decide`` is the pure rule: dispatch a full batch (``max_batch_size``) at once;
dispatch the largest ``preferred_batch_size`` that can be formed at once; otherwise wait until the
oldest queued request has waited ``max_queue_delay_microseconds`` and dispatch what is there.

``DynamicBatcher`` applies it on an asyncio event loop: one bounded queue shared by every model
instance, one collector per instance that forms batches while that instance runs the previous one.
A full queue rejects at once (:class:`QueueFullError`); cancelled or expired requests are dropped
before they reach the model. A batch takes the queued requests of its callers in turn (each
caller's oldest first, ``CALLER`` names the caller), so one caller's burst cannot keep another's
request waiting behind all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from lipsync_server.errors import DeadlineExceededError, QueueFullError

log = logging.getLogger(__name__)

# Who the current task works for (the server sets it per call: see DataPlane.call).
CALLER: ContextVar[str] = ContextVar("lipsync_caller", default="")

P = TypeVar("P")
Prepared = TypeVar("Prepared")
R = TypeVar("R")


@dataclass(frozen=True)
class Decision:
    """Dispatch ``size`` requests now (``size > 0``), else wait ``wait_us`` before asking again."""

    size: int
    wait_us: float = math.inf


@dataclass(frozen=True)
class BatchingPolicy:
    max_batch_size: int
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()

    def decide(self, queued: int, oldest_wait_us: float) -> Decision:
        if queued <= 0:
            return Decision(0)
        if queued >= self.max_batch_size:
            return Decision(self.max_batch_size)
        formable = [size for size in self.preferred_batch_sizes if size <= queued]
        if formable:
            return Decision(max(formable))
        if oldest_wait_us >= self.max_queue_delay_us:
            return Decision(queued)
        return Decision(0, self.max_queue_delay_us - oldest_wait_us)


@dataclass
class BatchTimings:
    """Per-batch stage times in seconds, shared by every request of the batch."""

    batch_size: int
    preprocess_s: float = 0.0
    infer_s: float = 0.0


@dataclass
class _Item(Generic[P, R]):
    payload: P
    future: asyncio.Future[tuple[R, float, BatchTimings]]
    enqueued: float
    deadline: float | None
    caller: str = ""


@dataclass
class _Batch(Generic[P, Prepared, R]):
    items: list[_Item[P, R]]
    prepared: Prepared
    timings: BatchTimings
    queue_waits: list[float] = field(default_factory=list)


class DynamicBatcher(Generic[P, Prepared, R]):
    """Batches payloads across callers; ``prepare`` and ``infer`` run off the event loop.

    ``prepare(payloads)`` builds the model inputs (in a thread pool); ``infer(instance, prepared)``
    runs instance ``instance`` (in that instance's thread) and returns one result per payload.
    """

    def __init__(
        self,
        policy: BatchingPolicy,
        *,
        max_queue_size: int,
        instances: int,
        prepare: Callable[[list[P]], Awaitable[Prepared]],
        infer: Callable[[int, Prepared], Awaitable[Sequence[R]]],
        on_batch: Callable[[BatchTimings, list[float]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._max_queue_size = max_queue_size
        self._instances = instances
        self._prepare = prepare
        self._infer = infer
        self._on_batch = on_batch
        self._queue: deque[_Item[P, R]] = deque()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._load = [0] * instances  # batches taken and not yet finished, per instance
        self._closed = False

    @property
    def max_batch_size(self) -> int:
        return self._policy.max_batch_size

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        for instance in range(self._instances):
            handoff: asyncio.Queue[_Batch[P, Prepared, R] | None] = asyncio.Queue(maxsize=1)
            self._tasks.append(
                asyncio.create_task(self._collect(instance, handoff), name=f"batcher-{instance}")
            )
            self._tasks.append(
                asyncio.create_task(self._execute(instance, handoff), name=f"instance-{instance}")
            )

    async def close(self) -> None:
        """Stop after the queued requests have run."""
        self._closed = True
        self._wakeup.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def submit(
        self, payload: P, deadline: float | None = None
    ) -> tuple[R, float, BatchTimings]:
        """Queue ``payload``; return (result, seconds queued, batch timings).

        Raises QueueFullError when the queue is full, DeadlineExceededError when ``deadline``
        (in ``clock`` seconds, ``time.monotonic()`` by default) passes before the request is
        batched.
        """
        if self._closed:
            raise RuntimeError("batcher is closed")
        if len(self._queue) >= self._max_queue_size:
            raise QueueFullError(f"queue full ({self._max_queue_size} frames waiting)")
        future: asyncio.Future[tuple[R, float, BatchTimings]] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue.append(_Item(payload, future, self._clock(), deadline, CALLER.get()))
        self._wakeup.set()
        return await future

    @staticmethod
    def _expire(items: list[_Item[P, R]], now: float) -> list[_Item[P, R]]:
        """The items still wanted; expired ones get DeadlineExceededError."""
        alive = []
        for item in items:
            if item.future.done():
                continue
            if item.deadline is not None and item.deadline <= now:
                item.future.set_exception(
                    DeadlineExceededError(
                        f"deadline passed after {now - item.enqueued:.3f} s in the batch queue"
                    )
                )
                continue
            alive.append(item)
        return alive

    def _drop_dead(self, now: float) -> None:
        if not any(
            item.future.done() or (item.deadline is not None and item.deadline <= now)
            for item in self._queue
        ):
            return
        self._queue = deque(self._expire(list(self._queue), now))

    def _defer(self, instance: int) -> bool:
        """Leave a batch to a less loaded instance (a busy one prefetches only if all are busy)."""
        return self._load[instance] > min(self._load) and not self._closed

    async def _next_batch(self, instance: int) -> list[_Item[P, R]] | None:
        while True:
            now = self._clock()
            self._drop_dead(now)
            oldest_wait_us = (now - self._queue[0].enqueued) * 1e6 if self._queue else 0.0
            decision = self._policy.decide(len(self._queue), oldest_wait_us)
            if self._closed and not decision.size:
                if not self._queue:
                    return None
                decision = Decision(min(len(self._queue), self._policy.max_batch_size))
            if decision.size and not self._defer(instance):
                self._load[instance] += 1
                return self._take(decision.size)
            self._wakeup.clear()
            timeout = None if math.isinf(decision.wait_us) else decision.wait_us / 1e6
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _take(self, size: int) -> list[_Item[P, R]]:
        """``size`` queued items, one per caller in turn, each caller's oldest first."""
        lanes: dict[str, deque[_Item[P, R]]] = {}
        for item in self._queue:
            lanes.setdefault(item.caller, deque()).append(item)
        if len(lanes) == 1:
            return [self._queue.popleft() for _ in range(size)]
        taken: list[_Item[P, R]] = []
        while len(taken) < size:
            for lane in lanes.values():
                if lane and len(taken) < size:
                    taken.append(lane.popleft())
        chosen = {id(item) for item in taken}
        self._queue = deque(item for item in self._queue if id(item) not in chosen)
        return taken

    async def _collect(
        self, instance: int, handoff: asyncio.Queue[_Batch[P, Prepared, R] | None]
    ) -> None:
        while True:
            items = await self._next_batch(instance)
            if items is None:
                await handoff.put(None)
                return
            started = self._clock()
            waits = [started - item.enqueued for item in items]
            timings = BatchTimings(batch_size=len(items))
            try:
                prepared = await self._prepare([item.payload for item in items])
            except Exception as exc:
                self._fail(items, exc)
                self._load[instance] -= 1
                continue
            timings.preprocess_s = self._clock() - started
            await handoff.put(_Batch(items, prepared, timings, waits))

    async def _execute(
        self, instance: int, handoff: asyncio.Queue[_Batch[P, Prepared, R] | None]
    ) -> None:
        while (batch := await handoff.get()) is not None:
            started = self._clock()
            try:
                if not self._expire(batch.items, started):
                    continue  # every request of the batch was cancelled or expired meanwhile
                results = await self._infer(instance, batch.prepared)
            except Exception as exc:
                log.exception(
                    "instance %d: inference failed for a batch of %d", instance, len(batch.items)
                )
                self._fail(batch.items, exc)
                continue
            finally:
                self._load[instance] -= 1
                self._wakeup.set()
            batch.timings.infer_s = self._clock() - started
            if self._on_batch is not None:
                self._on_batch(batch.timings, batch.queue_waits)
            for item, result, waited in zip(batch.items, results, batch.queue_waits, strict=True):
                if not item.future.done():
                    item.future.set_result((result, waited, batch.timings))

    @staticmethod
    def _fail(items: list[_Item[P, R]], exc: Exception) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(exc)
