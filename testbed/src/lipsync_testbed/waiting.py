"""Polling with a deadline: the only way the test bed waits for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from kubernetes import watch

T = TypeVar("T")


class WaitTimeoutError(TimeoutError):
    """A condition did not hold before its deadline."""


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.2,
    description: str = "condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `condition` until it returns a truthy value, and return that value.

    Exceptions listed in `ignore` count as "not yet" (the last one is reported on
    timeout). Raises WaitTimeoutError after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    last_value: T | None = None
    while True:
        try:
            value = condition()
        except ignore as exc:
            last_error = exc
        else:
            if value:
                return value
            last_value = value
        if time.monotonic() >= deadline:
            detail = (
                f"; last error: {last_error!r}" if last_error else f"; last value: {last_value!r}"
            )
            raise WaitTimeoutError(
                f"timed out after {timeout:.0f}s waiting for {description}{detail}"
            )
        time.sleep(interval)


def watch_events(
    list_func: Callable[..., Any], *args: Any, timeout_seconds: int = 30, **kwargs: Any
) -> Iterator[dict[str, Any]]:
    """Watch a list endpoint (e.g. CustomObjectsApi.list_namespaced_custom_object).

    Yields {"type": ADDED|MODIFIED|DELETED, "object": ...} until the server ends the
    watch after `timeout_seconds` or the caller stops iterating.
    """
    stream = watch.Watch()  # type: ignore[no-untyped-call]
    try:
        events = stream.stream(  # type: ignore[no-untyped-call]
            list_func, *args, timeout_seconds=timeout_seconds, **kwargs
        )
        yield from events
    finally:
        stream.stop()  # type: ignore[no-untyped-call]
