"""The two tracks a viewer receives, paced by the frames' presentation times on one clock.

The video track hands aiortc the server's H.264 access units as ``av.Packet`` (aiortc sends
them as they are, without decoding or encoding again). The audio track plays the speech each
frame shows (``Frame.audio_sample_start/end``) at that frame's time, so lips and sound agree
whatever the server's latency: both wait for the frame, not for the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack

VIDEO_CLOCK = Fraction(1, 90_000)  # RTP's video clock
AUDIO_FRAME_SECONDS = 0.02
START_DELAY_S = 0.1  # a little slack before the first frame plays: jitter in the server's pace


class Playout:
    """The viewer's clock: presentation time 0 is ``START_DELAY_S`` after the first frame."""

    def __init__(self) -> None:
        self._zero: float | None = None

    async def wait(self, pts_seconds: float) -> None:
        now = time.monotonic()
        if self._zero is None:
            self._zero = now + START_DELAY_S - pts_seconds
        await asyncio.sleep(max(0.0, self._zero + pts_seconds - now))

    def position(self) -> float:
        """The presentation time playing now (0 before the first frame)."""
        return 0.0 if self._zero is None else max(0.0, time.monotonic() - self._zero)


class _Paced(MediaStreamTrack):
    def __init__(self, clock: Playout) -> None:
        super().__init__()
        self._clock = clock
        self._queue: asyncio.Queue[tuple[float, object] | None] = asyncio.Queue()

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def _next(self) -> object:
        item = await self._queue.get()
        if item is None:
            self.stop()
            raise av.error.EOFError(0, "the avatar's stream ended")
        pts, payload = item
        await self._clock.wait(pts)
        return payload


class AvatarVideo(_Paced):
    """H.264 access units at their presentation times; asks for a keyframe when aiortc does."""

    kind = "video"

    def __init__(self, clock: Playout) -> None:
        super().__init__(clock)
        self.keyframe_wanted = asyncio.Event()

    def push(self, pts_seconds: float, access_unit: bytes) -> None:
        packet = av.Packet(access_unit)
        packet.pts = round(pts_seconds / VIDEO_CLOCK)
        packet.time_base = VIDEO_CLOCK
        self._queue.put_nowait((pts_seconds, packet))

    async def recv(self) -> av.Packet[Any]:
        packet = await self._next()
        assert isinstance(packet, av.Packet)
        return packet


class AvatarAudio(_Paced):
    """The speech each frame shows, in 20 ms frames of 16-bit mono, at the frame's time."""

    kind = "audio"

    def __init__(self, clock: Playout, sample_rate: int) -> None:
        super().__init__(clock)
        self._rate = sample_rate
        self._chunk = round(AUDIO_FRAME_SECONDS * sample_rate)

    def push(self, start_sample: int, samples: np.ndarray) -> None:
        """Samples (int16) that start at ``start_sample`` of the stream."""
        for offset in range(0, samples.size, self._chunk):
            piece = samples[offset : offset + self._chunk]
            frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = self._rate
            frame.pts = start_sample + offset
            frame.time_base = Fraction(1, self._rate)
            self._queue.put_nowait(((start_sample + offset) / self._rate, frame))

    async def recv(self) -> av.AudioFrame:
        frame = await self._next()
        assert isinstance(frame, av.AudioFrame)
        return frame
