"""Mel frames -> one mel window per video frame, as soon as the window is complete.

Video frame ``i`` takes ``window`` mel frames from ``int(mel_fps * i / fps)``, the last
``window`` ones where that runs past the end of the clip, as ``[1, n_mels, window]`` (mels x
time). A clip of ``n`` samples has ``ceil(n * fps / sample_rate)`` video frames; frame ``i``
shows samples ``[i, i + 1) * sample_rate / fps``. A window is silent when every mel frame in it
is below the silence level.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from lipsync_contract.modelio import EncoderContract
from lipsync_server.speech.mel import MelFrames


def video_frame_count(samples: int, sample_rate: int, fps: float) -> int:
    return math.ceil(samples * fps / sample_rate - 1e-9) if samples else 0


def sample_range(frame: int, sample_rate: int, fps: float, total: int | None) -> tuple[int, int]:
    """Samples ``[start, end)`` of video frame ``frame``; the last frame ends at ``total``."""
    start = round(frame * sample_rate / fps)
    end = round((frame + 1) * sample_rate / fps)
    if total is not None:
        start, end = min(start, total), min(end, total)
    return start, end


def window_start(frame: int, mel_fps: float, fps: float) -> int:
    return int(mel_fps * frame / fps)


@dataclass(frozen=True)
class MelWindow:
    frame: int
    mel: np.ndarray  # [1, n_mels, window] float32
    silent: bool


class MelWindower:
    """Per-frame mel windows of a stream of mel frames (``push``, then ``finish`` once)."""

    def __init__(self, contract: EncoderContract, silence_rms: float) -> None:
        self._contract = contract
        self._window = contract.window
        self._mel_fps = contract.front_end.frames_per_second
        self._silence_rms = silence_rms
        self._mel = np.empty((0, contract.front_end.n_mels), np.float32)
        self._loud = np.empty(0, bool)
        self._offset = 0  # mel index of self._mel[0]
        self._received = 0
        self._next = 0

    def push(self, frames: MelFrames) -> Iterator[MelWindow]:
        self._mel = np.concatenate([self._mel, frames.mel])
        self._loud = np.concatenate([self._loud, frames.rms >= self._silence_rms])
        self._received += frames.mel.shape[0]
        while self._start(self._next) + self._window <= self._received:
            yield self._take(self._start(self._next))

    def finish(self, samples: int) -> Iterator[MelWindow]:
        """The clip of ``samples`` samples has ended; its mel frames have all been pushed."""
        front_end = self._contract.front_end
        total = video_frame_count(samples, front_end.sample_rate, self._contract.fps)
        while self._next < total:
            start = min(self._start(self._next), max(0, self._received - self._window))
            yield self._take(start)

    def _start(self, frame: int) -> int:
        return window_start(frame, self._mel_fps, self._contract.fps)

    def _take(self, start: int) -> MelWindow:
        rows = np.clip(np.arange(start, start + self._window), 0, self._received - 1)
        rows -= self._offset
        mel = self._mel[rows].T[None]
        window = MelWindow(self._next, np.ascontiguousarray(mel), not self._loud[rows].any())
        self._next += 1
        keep = max(0, min(self._start(self._next), self._received - self._window)) - self._offset
        if keep > 0:
            self._mel, self._loud = self._mel[keep:], self._loud[keep:]
            self._offset += keep
        return window
