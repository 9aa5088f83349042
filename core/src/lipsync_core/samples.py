"""Synthetic model inputs that respect a contract (for checks, calibration and benchmarks)."""

from __future__ import annotations

import numpy as np

from lipsync_core.contract import ModelContract


def random_inputs(
    contract: ModelContract, batch: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Images uniform in the image range; audio features normal, clipped to the audio range."""
    low, high = contract.image.value_range
    image = rng.uniform(low, high, contract.image.batch_shape(batch)).astype(np.float32)
    audio_low, audio_high = contract.audio.value_range
    audio = np.clip(rng.normal(0.0, 1.0, contract.audio.batch_shape(batch)), audio_low, audio_high)
    return {contract.image.name: image, contract.audio.name: audio.astype(np.float32)}
