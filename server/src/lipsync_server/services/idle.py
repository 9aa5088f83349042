"""The idle limit of a request stream: the next message, unless neither a message arrived nor a
frame left for ``seconds`` (a client that opened a stream and went quiet holds no call forever)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TypeVar

from lipsync_server.errors import StreamIdleError

Message = TypeVar("Message")


class IdleLimit:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last = time.monotonic()

    def touch(self) -> None:
        """Something happened on the stream (a frame went out)."""
        self._last = time.monotonic()

    async def next(self, messages: AsyncIterator[Message]) -> Message | None:
        """The next message (None at the end of the stream); StreamIdleError when the stream
        stays idle for the limit. Frames still going out keep it alive."""
        if not self.seconds:
            return await anext(messages, None)
        read = asyncio.ensure_future(anext(messages, None))
        try:
            while True:
                remaining = self._last + self.seconds - time.monotonic()
                if remaining <= 0:
                    raise StreamIdleError(
                        f"no message and no frame for {self.seconds:g} s: the stream was idle "
                        "(stream_idle_seconds)"
                    )
                done, _ = await asyncio.wait({read}, timeout=remaining)
                if done:
                    self.touch()
                    return read.result()
        finally:
            read.cancel()
