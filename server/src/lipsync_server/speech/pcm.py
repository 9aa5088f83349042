"""PCM bytes -> checked float samples, resampled to the encoder's rate; audio files in.

Every failure is an InvalidRequestError that names the violation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soxr

from lipsync_server.errors import InvalidRequestError

PcmFormat = Literal["s16le", "f32le"]
SAMPLE_BYTES: dict[PcmFormat, int] = {"s16le": 2, "f32le": 4}
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000


def decode_pcm(data: bytes, fmt: PcmFormat, max_bytes: int) -> np.ndarray:
    """Mono samples, float32 at full scale 1.0."""
    if not data:
        raise InvalidRequestError("pcm: no data")
    if len(data) > max_bytes:
        raise InvalidRequestError(
            f"pcm: a chunk of {len(data)} bytes is over the limit of {max_bytes} bytes"
        )
    width = SAMPLE_BYTES[fmt]
    if len(data) % width:
        raise InvalidRequestError(
            f"pcm: {len(data)} bytes is not a whole number of {fmt} samples ({width} bytes each)"
        )
    if fmt == "s16le":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    samples = np.frombuffer(data, "<f4").astype(np.float32)
    if not np.isfinite(samples).all():
        raise InvalidRequestError("pcm: f32le samples contain NaN or Inf")
    return samples


def check_sample_rate(rate: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidRequestError(
            f"pcm: sample_rate {rate} is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}"
        )


@dataclass(frozen=True)
class PcmChunk:
    """One message's worth of speech, decoded."""

    samples: np.ndarray
    sample_rate: int
    fmt: PcmFormat


class PcmStream:
    """A stream's PCM at one sample rate and format, resampled to ``target_rate`` as it comes
    (soxr's streaming resampler: the output equals resampling the whole clip at once)."""

    def __init__(self, target_rate: int) -> None:
        self._target = target_rate
        self.sample_rate = 0
        self._fmt: PcmFormat | None = None
        self._resampler: soxr.ResampleStream | None = None
        self.samples_in = 0

    def push(self, chunk: PcmChunk) -> np.ndarray:
        """Samples at the target rate for ``chunk``."""
        if self._fmt is None:
            check_sample_rate(chunk.sample_rate)
            self.sample_rate, self._fmt = chunk.sample_rate, chunk.fmt
            if chunk.sample_rate != self._target:
                self._resampler = soxr.ResampleStream(
                    chunk.sample_rate, self._target, 1, dtype="float32", quality="HQ"
                )
        elif chunk.sample_rate != self.sample_rate:
            raise InvalidRequestError(
                f"pcm: sample_rate changed from {self.sample_rate} to {chunk.sample_rate} "
                "within one stream"
            )
        elif chunk.fmt != self._fmt:
            raise InvalidRequestError(
                f"pcm: format changed from {self._fmt} to {chunk.fmt} within one stream"
            )
        self.samples_in += chunk.samples.size
        if self._resampler is None:
            return chunk.samples
        out: np.ndarray = self._resampler.resample_chunk(chunk.samples)
        return out

    def finish(self) -> np.ndarray:
        if self._resampler is None:
            return np.empty(0, np.float32)
        out: np.ndarray = self._resampler.resample_chunk(np.empty(0, np.float32), last=True)
        return out


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """The whole clip at once (same result as :class:`PcmStream` fed in chunks)."""
    stream = PcmStream(target_rate)
    head = stream.push(PcmChunk(samples.astype(np.float32, copy=False), rate, "f32le"))
    return np.concatenate([head, stream.finish()])


def read_audio_file(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate from a WAV/FLAC/OGG file (channels averaged)."""
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise InvalidRequestError(f"{path}: cannot read audio: {exc}") from None
    mono: np.ndarray = data.mean(axis=1).astype(np.float32)
    return mono, int(rate)
