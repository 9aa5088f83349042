"""Results made once per key and shared: concurrent callers of one key await the same work."""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from lipsync_server.errors import DeadlineExceededError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedRenders(Generic[K, V]):
    """``await get(key, make, deadline)``: the value of ``key``, made by ``make()`` only if no
    caller has made or is making it; the least recently used dropped beyond ``capacity``.

    ``make`` runs to the end whoever waits for it (it should carry no caller's deadline); each
    caller waits until its own ``deadline`` (a ``time.monotonic()`` time). A failed or cancelled
    make is not kept: the next caller tries again.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._values: OrderedDict[K, asyncio.Future[V]] = OrderedDict()

    async def get(
        self, key: K, make: Callable[[], Awaitable[V]], deadline: float | None = None
    ) -> tuple[V, bool]:
        """The value, and whether this call made it."""
        pending = self._values.get(key)
        made_here = pending is None
        if pending is None:
            pending = asyncio.ensure_future(make())
            pending.add_done_callback(functools.partial(self._forget_failure, key))
            self._values[key] = pending
            while len(self._values) > self._capacity:
                self._values.popitem(last=False)
        self._values.move_to_end(key)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            # Shielded: a caller that gives up does not cancel the others' value.
            return await asyncio.wait_for(asyncio.shield(pending), timeout), made_here
        except TimeoutError:
            raise DeadlineExceededError("deadline passed while the frame was rendered") from None

    def _forget_failure(self, key: K, done: asyncio.Future[V]) -> None:
        failed = done.cancelled() or done.exception() is not None
        if failed and self._values.get(key) is done:
            del self._values[key]
