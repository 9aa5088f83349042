"""Rendered frames to H.264: one encoder per stream (or per Generate), fed in frame order, in a
worker thread so the event loop keeps serving; a keyframe when the client asks for one."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import numpy as np

from lipsync_server.dataplane import OutputOptions, RenderedFrame
from lipsync_server.video import H264Encoder


class KeyframeRequests:
    """Set by the request side of a stream, taken by the frame it sends next."""

    def __init__(self) -> None:
        self._asked = False

    def ask(self) -> None:
        self._asked = True

    def take(self) -> bool:
        asked, self._asked = self._asked, False
        return asked


class H264Frames:
    """Turns one sequence's raw frames into H.264 access units, in the order given."""

    def __init__(self, width: int, height: int, fps: float, options: OutputOptions) -> None:
        self._encoder = H264Encoder(width, height, fps, options.bitrate_kbps)
        self._lock = asyncio.Lock()  # order: one frame at a time through the encoder

    async def encode(self, frame: RenderedFrame, keyframe: bool = False) -> RenderedFrame:
        pixels = np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 3)
        async with self._lock:
            started = time.perf_counter()
            unit = await asyncio.to_thread(self._encoder.encode, pixels, keyframe)
            spent = time.perf_counter() - started
        timings = replace(
            frame.timings,
            encode_s=frame.timings.encode_s + spent,
            total_s=frame.timings.total_s + spent,
        )
        return replace(frame, encoding="h264", data=unit.data, keyframe=unit.keyframe,
                       timings=timings)  # fmt: skip
