"""Renders made once per key: concurrent callers share one, failures are not kept."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest

from lipsync_server.errors import DeadlineExceededError
from lipsync_server.shared_renders import SharedRenders

pytestmark = pytest.mark.unit


def test_concurrent_callers_of_a_key_share_one_make() -> None:
    made: list[str] = []

    async def run() -> list[tuple[str, bool]]:
        renders: SharedRenders[str, str] = SharedRenders(4)
        gate = asyncio.Event()

        async def make(key: str) -> str:
            made.append(key)
            await gate.wait()
            return key.upper()

        tasks = [
            asyncio.ensure_future(renders.get(key, functools.partial(make, key)))
            for key in ("a", "a", "b", "a")
        ]
        await asyncio.sleep(0)
        gate.set()
        return list(await asyncio.gather(*tasks))

    results = asyncio.run(run())
    assert made == ["a", "b"]
    assert results == [("A", True), ("A", False), ("B", True), ("A", False)]


def test_a_failed_make_is_retried_and_the_least_recent_key_goes_first() -> None:
    attempts: list[int] = []

    async def run() -> None:
        renders: SharedRenders[int, int] = SharedRenders(2)

        async def flaky(key: int) -> int:
            attempts.append(key)
            if attempts.count(key) == 1 and key == 0:
                raise RuntimeError("deadline passed")
            return key * 10

        with pytest.raises(RuntimeError, match="deadline"):
            await renders.get(0, lambda: flaky(0))
        assert await renders.get(0, lambda: flaky(0)) == (0, True)
        assert await renders.get(1, lambda: flaky(1)) == (10, True)
        assert await renders.get(0, lambda: flaky(0)) == (0, False)  # 0 is now the most recent
        assert await renders.get(2, lambda: flaky(2)) == (20, True)  # evicts 1
        assert await renders.get(0, lambda: flaky(0)) == (0, False)
        assert await renders.get(1, lambda: flaky(1)) == (10, True)

    asyncio.run(run())
    assert attempts == [0, 0, 1, 2, 1]


def test_a_caller_waits_only_until_its_own_deadline_and_the_make_goes_on() -> None:
    made: list[int] = []

    async def run() -> None:
        renders: SharedRenders[int, int] = SharedRenders(2)
        gate = asyncio.Event()

        async def slow() -> int:
            made.append(1)
            await gate.wait()
            return 7

        with pytest.raises(DeadlineExceededError):
            await renders.get(0, slow, deadline=time.monotonic())
        later = asyncio.ensure_future(renders.get(0, slow, deadline=time.monotonic() + 60))
        await asyncio.sleep(0)
        gate.set()
        assert await later == (7, False)  # made once, by the caller that gave up

    asyncio.run(run())
    assert made == [1]


def test_a_make_that_fails_after_every_caller_left_is_not_kept() -> None:
    async def run() -> None:
        renders: SharedRenders[int, int] = SharedRenders(2)
        gate = asyncio.Event()

        async def doomed() -> int:
            await gate.wait()
            raise RuntimeError("batch failed")

        waiter = asyncio.ensure_future(renders.get(0, doomed))
        await asyncio.sleep(0)
        waiter.cancel()  # the caller's stream ended
        gate.set()
        await asyncio.sleep(0.01)

        async def fine() -> int:
            return 3

        assert await renders.get(0, fine) == (3, True)

    asyncio.run(run())
