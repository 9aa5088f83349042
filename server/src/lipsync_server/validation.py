"""Turning request bytes into checked arrays; every failure is an InvalidRequestError that says
what was wrong. All checks are cheap and run before anything reaches the batcher."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lipsync_contract.modelio import ModelContract, TensorSpec
from lipsync_server.errors import InvalidRequestError

_FLOAT32 = np.dtype("<f4")


def check_finite(array: np.ndarray, what: str) -> None:
    if not np.isfinite(array).all():
        raise InvalidRequestError(f"{what} contains NaN or Inf")


def decode_features(
    data: bytes, contract: ModelContract, what: str = "audio features"
) -> np.ndarray:
    """``[frames, feature_dim]`` float32 from little-endian bytes."""
    dim = contract.audio_feature_dim
    row_bytes = 4 * dim
    if not data:
        raise InvalidRequestError(f"{what}: no data")
    if len(data) % row_bytes:
        raise InvalidRequestError(
            f"{what}: {len(data)} bytes is not a whole number of {dim}-dim float32 vectors "
            f"({row_bytes} bytes each)"
        )
    features = np.frombuffer(data, _FLOAT32).reshape(-1, dim)
    check_finite(features, what)
    return features


def decode_windows(data: bytes, contract: ModelContract) -> np.ndarray:
    """``[frames, *audio.shape]`` float32 from little-endian bytes."""
    shape = contract.audio.shape
    window_bytes = 4 * math.prod(shape)
    if not data:
        raise InvalidRequestError("audio windows: no data")
    if len(data) % window_bytes:
        raise InvalidRequestError(
            f"audio windows: {len(data)} bytes is not a whole number of windows of shape "
            f"{list(shape)} float32 ({window_bytes} bytes each)"
        )
    windows = np.frombuffer(data, _FLOAT32).reshape(-1, *shape)
    check_finite(windows, "audio windows")
    return windows


def check_frame_indices(
    indices: Sequence[int],
    limit: int,
    available: int | None,
    unit: str = "feature vectors were sent",
) -> None:
    """At least one index, at most ``limit``; below ``available`` (frames) when given."""
    if not indices:
        raise InvalidRequestError("no frame_indices given")
    if len(indices) > limit:
        raise InvalidRequestError(f"{len(indices)} frames requested; at most {limit} per request")
    if available is not None:
        bad = max(indices)
        if bad >= available:
            raise InvalidRequestError(f"frame index {bad} is out of range: {available} {unit}")


# -- KServe v2 tensors ---------------------------------------------------------------------------

OIP_DATATYPES = {"float32": "FP32", "float16": "FP16", "uint8": "UINT8"}


def oip_datatype(spec: TensorSpec) -> str:
    return OIP_DATATYPES[spec.dtype]


def decode_tensor(
    spec: TensorSpec,
    datatype: str,
    shape: Sequence[int],
    *,
    raw: bytes | None,
    fp32_contents: Sequence[float],
    max_batch: int,
) -> np.ndarray:
    """A checked float32 tensor ``[B, *spec.shape]`` from a KServe v2 input."""
    expected_type = oip_datatype(spec)
    if datatype != expected_type:
        raise InvalidRequestError(
            f"input {spec.name!r} has datatype {datatype!r}, expected {expected_type}"
        )
    if len(shape) != len(spec.shape) + 1 or tuple(shape[1:]) != spec.shape or shape[0] < 1:
        raise InvalidRequestError(
            f"input {spec.name!r} has shape {list(shape)}, "
            f"expected [B,{','.join(map(str, spec.shape))}]"
        )
    batch = shape[0]
    if batch > max_batch:
        raise InvalidRequestError(
            f"input {spec.name!r}: batch of {batch} exceeds max_batch_size {max_batch}"
        )
    count = batch * math.prod(spec.shape)
    if raw is not None:
        if len(raw) != 4 * count:
            raise InvalidRequestError(
                f"input {spec.name!r}: {len(raw)} bytes of raw data, "
                f"expected {4 * count} for shape {list(shape)}"
            )
        array = np.frombuffer(raw, _FLOAT32).reshape(tuple(shape))
    else:
        if len(fp32_contents) != count:
            raise InvalidRequestError(
                f"input {spec.name!r}: {len(fp32_contents)} fp32_contents values, expected {count}"
            )
        array = np.asarray(fp32_contents, np.float32).reshape(tuple(shape))
    check_finite(array, f"input {spec.name!r}")
    return array
