"""Whether this replica still gets its work done, for its liveness probe: a reconcile that has run
too long (a call that hangs past every timeout) or reconciles that could not reach the API server
for too long make /healthz fail, so the kubelet restarts the replica."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from itertools import count

from urllib3.exceptions import HTTPError


class ReconcileHealth:
    """Reconciles in progress and the API trouble since the last one that reached the server."""

    def __init__(self, stall_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_seconds = stall_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = count()
        self._running: dict[int, float] = {}
        self._unreachable_since: float | None = None

    @contextlib.contextmanager
    def reconciling(self) -> Iterator[None]:
        """Around one reconcile. An API server it could not reach (HTTPError: refused, timed
        out) counts against liveness; every other outcome shows the server answered."""
        token = next(self._tokens)
        with self._lock:
            self._running[token] = self._clock()
        try:
            yield
        except HTTPError:
            with self._lock:
                if self._unreachable_since is None:
                    self._unreachable_since = self._clock()
            raise
        except Exception:
            self._reached()
            raise
        else:
            self._reached()
        finally:
            with self._lock:
                del self._running[token]

    def _reached(self) -> None:
        with self._lock:
            self._unreachable_since = None

    def problem(self) -> str | None:
        """Why this replica is not live, or None."""
        now = self._clock()
        with self._lock:
            oldest = min(self._running.values(), default=None)
            unreachable = self._unreachable_since
        if oldest is not None and now - oldest > self.stall_seconds:
            return f"a reconcile has been running for {now - oldest:.0f} s"
        if unreachable is not None and now - unreachable > self.stall_seconds:
            return f"reconciles have not reached the API server for {now - unreachable:.0f} s"
        return None
