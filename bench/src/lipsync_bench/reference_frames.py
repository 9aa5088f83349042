"""Real model outputs to post-process: the reference UNet-328 (seed 0, ONNX Runtime CPU) on the
1280x720 demo avatar with synthetic audio features, as the benchmarks of frame encodings and
post-processing use them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipsync_contract.modelio import preset
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.reference.unet328 import build_unet328
from lipsync_server.audio import build_windows, synthetic_features
from lipsync_server.avatar.demo import write_demo_avatar
from lipsync_server.avatar.store import AvatarStore, ping_pong


@dataclass(frozen=True)
class ReferenceOutputs:
    store: AvatarStore
    avatar_frames: list[int]
    faces: np.ndarray  # [count, 3, 320, 320] float32, BGR in [0, 1]


def reference_outputs(count: int, scratch: Path, batch: int = 4) -> ReferenceOutputs:
    """``count`` frames' model outputs; the avatar (25 frames) and model are written to
    ``scratch``."""
    contract = preset("unet328-ave")
    model = scratch / "unet.onnx"
    model.write_bytes(build_unet328(seed=0).SerializeToString())
    write_demo_avatar(scratch / "avatar", frames=25)
    store = AvatarStore.load(scratch / "avatar")
    backend = load_backend(model, contract, BackendConfig(kind="onnxruntime-cpu"))
    features = synthetic_features(count, contract.audio_feature_dim, seed=0)
    avatar_frames = [ping_pong(index, store.frame_count) for index in range(count)]
    faces = []
    for start in range(0, count, batch):
        indices = list(range(start, min(count, start + batch)))
        image = np.empty(contract.image.batch_shape(len(indices)), np.float32)
        store.fill_image_batch([avatar_frames[i] for i in indices], image)
        windows = build_windows(features, indices, contract)
        faces.append(np.asarray(backend.infer({contract.image.name: image,
                                               contract.audio.name: windows})))  # fmt: skip
    return ReferenceOutputs(store, avatar_frames, np.concatenate(faces))
