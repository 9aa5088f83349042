"""H.264 frames for streams: one encoder per stream (frames in order, keyframes on request,
NVENC where the GPU has one, libx264 otherwise), and a decoder for clients and tests.

Each frame becomes one access unit in Annex B form with no B-frames and no look-ahead, so a
gateway can forward it as it comes (WebRTC sends H.264 packets as they are). SPS and PPS go in
band before every IDR, so a viewer can start at any keyframe.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from lipsync_server.errors import InvalidRequestError, NotConfiguredError

# PyAV is imported where H.264 is used: a server that sends only JPEG runs without it.
if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

DEFAULT_BITRATE_KBPS = 1500
BITRATE_RANGE_KBPS = (100, 50_000)
KEYFRAME_SECONDS = 2.0  # an IDR at least this often, besides those asked for
NVENC, X264 = "h264_nvenc", "libx264"
_OPTIONS = {
    # No look-ahead, no frame threads: one frame in, one access unit out.
    X264: {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1",
           "x264-params": "repeat-headers=1:scenecut=0"},
    NVENC: {"preset": "p1", "tune": "ull", "zerolatency": "1", "delay": "0", "forced-idr": "1"},
}  # fmt: skip


@functools.cache
def h264_codec() -> str:
    """h264_nvenc when it opens here (a GPU with NVENC, and its driver), else libx264; empty
    where PyAV is not installed (the server then sends JPEG and raw frames only)."""
    try:
        import av
    except ImportError:
        log.info("no PyAV here: no H.264 frames")
        return ""
    try:
        _open(NVENC, 256, 256, 25.0, DEFAULT_BITRATE_KBPS)
    except (av.FFmpegError, ValueError) as exc:
        log.debug("no NVENC here (%s): H.264 from libx264 on the CPU", exc)
        return X264
    return NVENC


def check_bitrate(kbps: int) -> int:
    """The bitrate a request asks for (0: the default), refused outside the range."""
    if kbps == 0:
        return DEFAULT_BITRATE_KBPS
    low, high = BITRATE_RANGE_KBPS
    if not low <= kbps <= high:
        raise InvalidRequestError(f"bitrate_kbps {kbps} is outside {low}..{high}")
    return kbps


def _open(codec: str, width: int, height: int, fps: float, kbps: int) -> av.VideoCodecContext:
    import av

    context = av.CodecContext.create(codec, "w")
    assert isinstance(context, av.VideoCodecContext)
    rate = Fraction(fps).limit_denominator(1001)
    context.width, context.height = width, height
    context.pix_fmt = "yuv420p"
    context.framerate = rate
    context.time_base = 1 / rate
    context.bit_rate = kbps * 1000
    context.gop_size = max(1, round(fps * KEYFRAME_SECONDS))
    context.max_b_frames = 0
    context.thread_count = 1  # streams run in parallel; each encoder keeps to one core
    context.options = dict(_OPTIONS[codec])
    context.open()
    return context


@dataclass(frozen=True)
class AccessUnit:
    data: bytes
    keyframe: bool


class H264Encoder:
    """One stream's encoder; ``encode`` takes its frames in order (not thread-safe)."""

    def __init__(self, width: int, height: int, fps: float, kbps: int) -> None:
        if width % 2 or height % 2:
            raise InvalidRequestError(
                f"H.264 needs an even frame size (4:2:0); the avatar is {width}x{height}"
            )
        self.codec = h264_codec()
        if not self.codec:
            raise NotConfiguredError(
                "ENCODING_H264 needs PyAV (the av package), which this server runs without"
            )
        self._context = _open(self.codec, width, height, fps, kbps)
        self._count = 0

    def encode(self, frame: np.ndarray, keyframe: bool = False) -> AccessUnit:
        """One BGR ``[height, width, 3]`` uint8 frame; the first one is always an IDR."""
        import av

        picture = av.VideoFrame.from_ndarray(frame, format="bgr24").reformat(format="yuv420p")
        picture.pts = self._count
        if keyframe or self._count == 0:
            picture.pict_type = av.video.frame.PictureType.I
        self._count += 1
        packets = self._context.encode(picture)
        return AccessUnit(
            b"".join(bytes(packet) for packet in packets),
            any(packet.is_keyframe for packet in packets),
        )


class H264Decoder:
    """Decodes a stream's access units, in order, back to BGR frames."""

    def __init__(self) -> None:
        import av

        self._context = av.CodecContext.create("h264", "r")

    def decode(self, data: bytes) -> list[np.ndarray]:
        import av

        frames = self._context.decode(av.Packet(data))
        return [frame.to_ndarray(format="bgr24") for frame in frames]
