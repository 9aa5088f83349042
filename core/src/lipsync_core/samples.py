"""Synthetic model inputs that respect a contract (for checks, calibration and benchmarks)."""

from __future__ import annotations

import numpy as np

from lipsync_contract.modelio import IOContract


def random_inputs(
    contract: IOContract, batch: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Images uniform in their range; features (audio, mel) normal, clipped to their range."""
    inputs = {}
    for spec in contract.inputs:
        low, high = spec.value_range
        shape = spec.batch_shape(batch)
        if spec.channel_order == "features":
            values = np.clip(rng.normal(0.0, 1.0, shape), low, high)
        else:
            values = rng.uniform(low, high, shape)
        inputs[spec.name] = values.astype(np.float32)
    return inputs
