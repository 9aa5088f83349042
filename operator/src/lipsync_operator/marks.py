"""Which models to reconcile next: marks set by watch events, waited on by each model's worker.

A mark is a flag, not a queue: a thousand node events before a worker wakes cost one reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from lipsync_operator.observed import GpuNode, pod_gpu_request

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


def freed_gpu_node(event_type: str | None, pod: Mapping[str, Any], gpu_resource: str) -> str:
    """The node whose GPUs a pod event gives back ('' for none): a bound pod holding GPUs that
    is gone or has finished. A model waiting for GPUs there looks again at once, before a node
    autoscaler removes the node as empty."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    node = str(spec.get("nodeName") or "")
    released = event_type == "DELETED" or status.get("phase") in ("Succeeded", "Failed")
    return node if released and pod_gpu_request(pod, gpu_resource) else ""


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
