"""MP4 with sound: H.264 video and AAC audio through PyAV (FFmpeg's libraries from its wheel),
and a probe of what a file holds (the container and stream facts ``ffprobe`` reports)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

_AUDIO_FRAME = 1024  # samples per AAC frame


def write_mp4(
    path: Path,
    frames: Sequence[np.ndarray],
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> None:
    """``frames`` (BGR uint8, one size) at ``fps``, with mono float ``audio`` when given."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=sample_rate, layout="mono")
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None and audio is not None:
            samples = np.clip(audio, -1.0, 1.0).astype(np.float32)
            for start in range(0, samples.size, _AUDIO_FRAME):
                chunk = samples[None, start : start + _AUDIO_FRAME]
                piece = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                piece.sample_rate = sample_rate
                piece.pts = start
                container.mux(sound.encode(piece))
            container.mux(sound.encode(None))


@dataclass(frozen=True)
class StreamFacts:
    kind: str  # "video" or "audio"
    codec: str
    duration_s: float
    frames: int


def probe(path: Path) -> list[StreamFacts]:
    """The streams of a media file and their durations."""
    facts = []
    with av.open(str(path)) as container:
        for stream in container.streams:
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = float(container.duration or 0) / av.time_base
            facts.append(
                StreamFacts(stream.type, stream.codec_context.name, duration, stream.frames)
            )
    return facts
