"""Children applied a moment ago, so that a reconcile does not send the same apply again.

Most reconciles (a pod got Ready, a node heartbeat changed a condition) want exactly the children
they already applied. Re-applying is a no-op for the API server but a request and a write path
each; a manifest equal to the one applied less than ``ttl`` seconds ago is skipped. The bound
keeps the operator level-triggered: edits by others are taken back within ``ttl``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from lipsync_operator.manifests.common import Manifest

Key = tuple[str, str, str]  # namespace, kind, name


def manifest_key(manifest: Manifest) -> Key:
    meta = manifest["metadata"]
    return (str(meta.get("namespace", "")), str(manifest["kind"]), str(meta["name"]))


def manifest_digest(manifest: Manifest) -> str:
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class RecentApplies:
    """Digest and time of the last successful apply of each child (thread-safe enough: one
    reconcile per model at a time, and keys are per child)."""

    def __init__(self, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._applied: dict[Key, tuple[str, float]] = {}

    def fresh(self, manifest: Manifest) -> bool:
        """Applied as it is now, less than ``ttl`` seconds ago."""
        found = self._applied.get(manifest_key(manifest))
        if found is None:
            return False
        digest, at = found
        return digest == manifest_digest(manifest) and self._clock() - at < self.ttl

    def record(self, manifest: Manifest) -> None:
        self._applied[manifest_key(manifest)] = (manifest_digest(manifest), self._clock())

    def forget(self, namespace: str, kind: str, name: str) -> None:
        self._applied.pop((namespace, kind, name), None)
