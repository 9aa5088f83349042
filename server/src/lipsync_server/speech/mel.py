"""The log-mel front end of the "ave" encoder, offline and incremental, with equal results.

16 kHz mono -> pre-emphasis ``[1, -0.97]`` -> centred STFT (Hann, zero padding of ``n_fft // 2``
at both ends) -> magnitude -> Slaney mel basis -> ``20 * log10(max(1e-5, x)) - ref_level_db`` ->
``clip(2 * max_abs * (dB - min_level) / -min_level - max_abs, -max_abs, max_abs)``.

:class:`MelStream` takes samples in chunks of any size and returns each mel frame as soon as its
STFT window is complete; after :meth:`MelStream.finish` it has returned exactly the frames of
:func:`log_mel` on the concatenated samples (the same function computes both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipsync_contract.modelio import MelSettings

_F_SP = 200.0 / 3  # Slaney's mel scale: linear below 1 kHz, logarithmic above
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    linear = hz / _F_SP
    safe = np.maximum(hz, _MIN_LOG_HZ)
    mel: np.ndarray = np.where(
        hz >= _MIN_LOG_HZ, _MIN_LOG_MEL + np.log(safe / _MIN_LOG_HZ) / _LOG_STEP, linear
    )
    return mel


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    hz: np.ndarray = np.where(
        mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel - _MIN_LOG_MEL)), _F_SP * mel
    )
    return hz


def mel_basis(settings: MelSettings) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` triangular filters on the Slaney scale, area-normalised
    (the definition of ``librosa.filters.mel`` with ``htk=False, norm="slaney"``)."""
    freqs = np.fft.rfftfreq(settings.n_fft, 1.0 / settings.sample_rate)
    edges = mel_to_hz(
        np.linspace(
            hz_to_mel(np.array(settings.fmin)),
            hz_to_mel(np.array(settings.fmax)),
            settings.n_mels + 2,
        )
    )
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    basis: np.ndarray = weights
    return basis


@dataclass(frozen=True)
class MelFrames:
    """Consecutive mel frames: ``mel [T, n_mels]`` (normalised) and each frame's RMS level of
    the pre-emphasised, windowed signal (``rms [T]``, full scale 1.0)."""

    mel: np.ndarray
    rms: np.ndarray

    @staticmethod
    def empty(n_mels: int) -> MelFrames:
        return MelFrames(np.empty((0, n_mels), np.float32), np.empty(0, np.float32))


class MelAnalyzer:
    """The per-frame transform, shared by the offline and the incremental paths."""

    def __init__(self, settings: MelSettings) -> None:
        self.settings = settings
        self._basis = mel_basis(settings)
        window = np.hanning(settings.win_length + 1)[:-1]  # periodic Hann
        pad = (settings.n_fft - settings.win_length) // 2
        self._window = np.pad(window, (pad, settings.n_fft - settings.win_length - pad))
        self._window_power = float(np.sum(self._window**2))

    def frames(self, padded: np.ndarray, count: int) -> MelFrames:
        """Mel frames 0..count-1 of ``padded`` (pre-emphasised samples, already centred)."""
        s = self.settings
        if count <= 0:
            return MelFrames.empty(s.n_mels)
        needed = (count - 1) * s.hop_length + s.n_fft
        views = np.lib.stride_tricks.sliding_window_view(padded[:needed], s.n_fft)
        windowed = views[:: s.hop_length] * self._window
        magnitude = np.abs(np.fft.rfft(windowed, axis=-1))
        mel = magnitude @ self._basis.T
        db = 20.0 * np.log10(np.maximum(1e-5, mel)) - s.ref_level_db
        span = -s.min_level_db
        normalised = np.clip(
            2 * s.max_abs_value * (db - s.min_level_db) / span - s.max_abs_value,
            -s.max_abs_value,
            s.max_abs_value,
        )
        rms = np.sqrt(np.sum(windowed**2, axis=-1) / self._window_power)
        return MelFrames(normalised.astype(np.float32), rms.astype(np.float32))


def preemphasis(samples: np.ndarray, coefficient: float, previous: float = 0.0) -> np.ndarray:
    """``y[n] = x[n] - c * x[n-1]`` with ``x[-1] = previous`` (float64)."""
    x = np.asarray(samples, np.float64)
    shifted = np.concatenate([[previous], x[:-1]]) if x.size else x
    result: np.ndarray = x - coefficient * shifted
    return result


def mel_frame_count(samples: int, settings: MelSettings) -> int:
    """Frames of a centred STFT over ``samples``."""
    return 1 + samples // settings.hop_length


def log_mel(samples: np.ndarray, settings: MelSettings) -> MelFrames:
    """The whole clip at once (``samples`` at ``settings.sample_rate``, mono, full scale 1.0)."""
    half = settings.n_fft // 2
    padded = np.pad(preemphasis(samples, settings.preemphasis), (half, half))
    return MelAnalyzer(settings).frames(padded, mel_frame_count(len(samples), settings))


class MelStream:
    """Incremental :func:`log_mel`: ``push`` chunks, then ``finish`` once."""

    def __init__(self, settings: MelSettings, analyzer: MelAnalyzer | None = None) -> None:
        self._settings = settings
        self._analyzer = analyzer or MelAnalyzer(settings)
        self._buffer = np.zeros(settings.n_fft // 2)  # the centring pad before sample 0
        self._offset = 0  # padded index of self._buffer[0]
        self._previous = 0.0  # last raw sample, for the pre-emphasis of the next chunk
        self._samples = 0
        self._emitted = 0
        self._finished = False

    @property
    def samples(self) -> int:
        return self._samples

    def push(self, samples: np.ndarray) -> MelFrames:
        """Add samples; return the mel frames they complete."""
        if self._finished:
            raise RuntimeError("the stream has finished")
        if samples.size:
            emphasised = preemphasis(samples, self._settings.preemphasis, self._previous)
            self._previous = float(samples[-1])
            self._buffer = np.concatenate([self._buffer, emphasised])
            self._samples += samples.size
        s = self._settings
        available = self._offset + self._buffer.size  # padded samples received
        complete = max(0, (available - s.n_fft) // s.hop_length + 1)
        return self._emit(complete)

    def finish(self) -> MelFrames:
        """The clip has ended: the remaining frames, with the end padding."""
        self._finished = True
        self._buffer = np.concatenate([self._buffer, np.zeros(self._settings.n_fft // 2)])
        return self._emit(mel_frame_count(self._samples, self._settings))

    def _emit(self, until: int) -> MelFrames:
        s = self._settings
        if until <= self._emitted:
            return MelFrames.empty(s.n_mels)
        start = self._emitted * s.hop_length - self._offset
        frames = self._analyzer.frames(self._buffer[start:], until - self._emitted)
        self._emitted = until
        drop = self._emitted * s.hop_length - self._offset  # next frame's first sample
        self._buffer = self._buffer[drop:]
        self._offset += drop
        return frames
