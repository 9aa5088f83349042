"""Int8 calibration data from an avatar package and audio features, in the builder's format.

The engine builder reads ``.npz`` files whose arrays are named after the contract's inputs, with
a leading sample dimension. The samples here are what the server feeds the model: avatar frame
``ping_pong(i)``'s 6-channel input and frame ``i``'s audio window, for ``count`` frames spread
evenly over the clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lipsync_contract.errors import ContractError
from lipsync_contract.modelio import ModelContract
from lipsync_server.audio import build_windows, check_window_shape, synthetic_features
from lipsync_server.avatar.store import AvatarStore, ping_pong


def calibration_arrays(
    store: AvatarStore, features: np.ndarray, contract: ModelContract, count: int
) -> dict[str, np.ndarray]:
    """``{image input: [count, 6, 320, 320], audio input: [count, *audio]}`` as float32."""
    check_window_shape(contract)
    if store.model_inputs.shape[1:] != contract.image.shape:
        raise ContractError(
            f"avatar inputs are {list(store.model_inputs.shape[1:])}, the model's "
            f"{contract.image.name!r} is {list(contract.image.shape)}"
        )
    if features.ndim != 2 or features.shape[1] != contract.audio_feature_dim:
        raise ContractError(
            f"audio features must be [frames, {contract.audio_feature_dim}], "
            f"got {list(features.shape)}"
        )
    clip_frames = features.shape[0]
    centers = [int(c) for c in np.linspace(0, clip_frames - 1, min(count, clip_frames))]
    images = np.empty((len(centers), *contract.image.shape), np.float32)
    store.fill_image_batch([ping_pong(c, store.frame_count) for c in centers], images)
    return {
        contract.image.name: images,
        contract.audio.name: build_windows(features, centers, contract),
    }


def write_calibration(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` as one compressed ``.npz`` (a directory gets ``calibration.npz``)."""
    target = path / "calibration.npz" if path.suffix != ".npz" else path
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(target, **arrays)  # type: ignore[arg-type]
    return target


def write_avatar_calibration(
    avatar: Path,
    output: Path,
    contract: ModelContract,
    samples: int,
    features: np.ndarray | None = None,
) -> tuple[Path, int]:
    """Load the avatar, make ``samples`` samples (synthetic features when none are given), write
    them; returns the file and the sample count."""
    store = AvatarStore.load(avatar)
    if features is None:
        features = synthetic_features(max(samples, store.frame_count), contract.audio_feature_dim)
    arrays = calibration_arrays(store, features, contract, samples)
    return write_calibration(output, arrays), len(arrays[contract.image.name])
