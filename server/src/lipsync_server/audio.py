"""Audio windows: per-frame feature vectors -> the model's audio tensor for each frame.

Frame i's window holds the vectors i-before .. i+after (``before`` = contract.audio_window_before,
``after`` = window - before - 1), the first and last vectors of the clip repeated past its ends,
flattened and reshaped to ``contract.audio.shape`` (16 x 512 -> 32 x 16 x 16 for "ave").
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from lipsync_contract.errors import ContractError
from lipsync_contract.modelio import ModelContract


def check_window_shape(contract: ModelContract) -> None:
    """Raise ContractError unless a window of feature vectors fills the audio tensor exactly."""
    window_size = contract.audio_window * contract.audio_feature_dim
    tensor_size = math.prod(contract.audio.shape)
    if window_size != tensor_size:
        raise ContractError(
            f"an audio window of {contract.audio_window} x {contract.audio_feature_dim} features "
            f"({window_size} values) cannot fill audio tensor {contract.audio.describe()} "
            f"({tensor_size} values)"
        )


def window_rows(center: int, count: int, contract: ModelContract) -> np.ndarray:
    """Indices of the feature vectors in frame ``center``'s window, clamped to 0..count-1."""
    start = center - contract.audio_window_before
    return np.clip(np.arange(start, start + contract.audio_window), 0, count - 1)


def build_windows(features: np.ndarray, centers: list[int], contract: ModelContract) -> np.ndarray:
    """Windows ``[len(centers), *audio.shape]`` (float32) of ``features[T, dim]``."""
    count = features.shape[0]
    rows = np.stack([window_rows(center, count, contract) for center in centers])
    windows: np.ndarray = features[rows].reshape(len(centers), *contract.audio.shape)
    return windows.astype(np.float32, copy=False)


class StreamWindower:
    """Windows for a stream of feature chunks, frame by frame, once their look-ahead arrives.

    Each vector may be flagged silent; a frame is silent when every vector of its window is.
    """

    def __init__(self, contract: ModelContract) -> None:
        self._contract = contract
        self._after = contract.audio_window - contract.audio_window_before - 1
        self._buffer = np.empty((0, contract.audio_feature_dim), np.float32)
        self._silent = np.empty(0, bool)
        self._offset = 0  # clip index of self._buffer[0]
        self._received = 0
        self._next = 0  # next frame to emit

    @property
    def frames_emitted(self) -> int:
        return self._next

    def push(
        self, features: np.ndarray, silent: np.ndarray | None = None
    ) -> Iterator[tuple[int, np.ndarray, bool]]:
        """Add vectors; yield (frame, window, silent) for frames whose window is now complete."""
        flags = np.zeros(features.shape[0], bool) if silent is None else silent
        self._buffer = np.concatenate([self._buffer, features.astype(np.float32, copy=False)])
        self._silent = np.concatenate([self._silent, flags])
        self._received += features.shape[0]
        yield from self._emit(self._received - self._after)

    def finish(self) -> Iterator[tuple[int, np.ndarray, bool]]:
        """The clip has ended: yield the remaining frames with the last vector repeated."""
        yield from self._emit(self._received)

    def _emit(self, until: int) -> Iterator[tuple[int, np.ndarray, bool]]:
        while self._next < until:
            rows = window_rows(self._next, self._received, self._contract) - self._offset
            window = self._buffer[rows].reshape(self._contract.audio.shape)
            yield self._next, window, bool(self._silent[rows].all())
            self._next += 1
        keep_from = max(0, self._next - self._contract.audio_window_before)
        if keep_from > self._offset:
            self._buffer = self._buffer[keep_from - self._offset :]
            self._silent = self._silent[keep_from - self._offset :]
            self._offset = keep_from


def synthetic_features(frames: int, dim: int, seed: int = 0) -> np.ndarray:
    """Smooth pseudo audio features ``[frames, dim]``: slow sinusoids with noise (demo, tests)."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames, dtype=np.float32)[:, None]
    freqs = rng.uniform(0.05, 0.6, (1, dim)).astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, (1, dim)).astype(np.float32)
    noise = rng.normal(0, 0.1, (frames, dim)).astype(np.float32)
    features: np.ndarray = (np.sin(t * freqs + phases) + noise).astype(np.float32)
    return features
