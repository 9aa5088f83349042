"""Which models to reconcile next: marks set by watch events, waited on by each model's worker.

A mark is a flag, not a queue: a thousand node events before a worker wakes cost one reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from lipsync_operator.observed import GpuNode

# What a reconcile reads from a node: a GpuNode without the fields that change with heartbeats
# and relabels that move nothing (its name, memory, autoscaler label, NotReady time).
NodeFacts = GpuNode


def node_facts(node: GpuNode | None) -> NodeFacts | None:
    if node is None:
        return None
    return replace(node, name="", memory_mib=0, not_ready_since=None, autoscaled=False)


def products_touched(before: NodeFacts | None, after: NodeFacts | None) -> frozenset[str]:
    """GPU products whose models must look again after a node went from ``before`` to
    ``after`` (None: absent or without GPUs): both sides of a relabel, none for no change."""
    if before == after:
        return frozenset()
    return frozenset(facts.product for facts in (before, after) if facts is not None)


class Marks:
    """Per-model flags in the operator's event loop (set and awaited from coroutines only)."""

    def __init__(self) -> None:
        self._flags: dict[str, asyncio.Event] = {}

    def _flag(self, uid: str) -> asyncio.Event:
        return self._flags.setdefault(uid, asyncio.Event())

    def mark(self, uid: str) -> None:
        self._flag(uid).set()

    def marked(self, uid: str) -> bool:
        return uid in self._flags and self._flags[uid].is_set()

    def clear(self, uid: str) -> None:
        self._flag(uid).clear()

    def forget(self, uid: str) -> None:
        self._flags.pop(uid, None)

    async def wait(self, uid: str, timeout: float) -> bool:
        """True when marked within ``timeout`` seconds (at once if already marked)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flag(uid).wait(), timeout)
            return True
        return False
