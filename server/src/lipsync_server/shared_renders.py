"""Results made once per key and shared: concurrent callers of one key await the same work."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedRenders(Generic[K, V]):
    """``await get(key, make)``: the value of ``key``, made by ``make()`` only if no caller has
    made or is making it; the least recently used dropped beyond ``capacity``. A failed make is
    not kept (the next caller tries again)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._values: OrderedDict[K, asyncio.Future[V]] = OrderedDict()

    async def get(self, key: K, make: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """The value, and whether this call made it."""
        pending = self._values.get(key)
        made_here = pending is None
        if pending is None:
            pending = asyncio.ensure_future(make())
            self._values[key] = pending
            while len(self._values) > self._capacity:
                self._values.popitem(last=False)
        self._values.move_to_end(key)
        try:
            # Shielded: a caller that gives up does not cancel the others' value.
            return await asyncio.shield(pending), made_here
        except Exception:
            if pending.done() and self._values.get(key) is pending:
                del self._values[key]
            raise
