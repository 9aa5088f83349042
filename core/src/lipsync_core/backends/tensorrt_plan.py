"""What a TensorRT plan's tensors and optimization profiles imply, computed without a GPU.

The TensorRT backend reads the engine's named tensors and per-profile (min, opt, max) shapes into
these plain values; everything decided from them (which profile serves a batch, how large each
buffer is, which numpy dtype a tensor has, whether the engine fits the contract) lives here.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lipsync_contract.errors import BackendError, ContractError
from lipsync_contract.modelio import IOContract, TensorSpec

# TensorRT DataType member names -> numpy dtypes. FP8, INT4, FP4 and E8M0 have no numpy twin and
# never appear at the I/O of a lip-sync engine.
_NUMPY_DTYPES: dict[str, np.dtype[np.generic]] = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "INT8": np.dtype(np.int8),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
}


@dataclass(frozen=True)
class ProfileShapes:
    """One input's (min, opt, max) shapes under one optimization profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class BatchRange:
    """The batch sizes one optimization profile accepts for all inputs together."""

    min: int
    opt: int
    max: int

    def __contains__(self, batch: object) -> bool:
        return isinstance(batch, int) and self.min <= batch <= self.max


@dataclass(frozen=True)
class EngineTensor:
    """One named I/O tensor of an engine; ``shape`` holds -1 for dynamic dimensions."""

    name: str
    is_input: bool
    dtype: str
    shape: tuple[int, ...]


def numpy_dtype(trt_dtype: str) -> np.dtype[np.generic]:
    """The numpy dtype of a TensorRT DataType, by member name (``FLOAT``, ``HALF``, ...)."""
    try:
        return _NUMPY_DTYPES[trt_dtype]
    except KeyError:
        raise BackendError(f"TensorRT data type {trt_dtype} has no numpy equivalent") from None


def tensor_nbytes(shape: Sequence[int], dtype: np.dtype[np.generic]) -> int:
    """Bytes of a dense tensor; every dimension must be known."""
    if any(dim < 0 for dim in shape):
        raise BackendError(f"cannot size a buffer for shape {list(shape)} with dynamic dimensions")
    return math.prod(shape) * dtype.itemsize


def array_at(address: int, shape: tuple[int, ...], dtype: np.dtype[np.generic]) -> np.ndarray:
    """A numpy view of ``shape`` over memory at ``address`` (pinned host memory from CUDA); the
    caller keeps the memory alive as long as the view."""
    raw = (ctypes.c_byte * tensor_nbytes(shape, dtype)).from_address(address)
    return np.frombuffer(memoryview(raw), dtype=dtype).reshape(shape)


def profile_batch_range(
    index: int, shapes: dict[str, ProfileShapes], contract: IOContract
) -> BatchRange:
    """The batch range of profile ``index``: the intersection over inputs of dimension 0, after
    checking that each input's other dimensions admit the contract's shape."""
    specs = {spec.name: spec for spec in contract.inputs}
    low, opt, high = 1, 1, math.inf
    for name, profile in shapes.items():
        spec = specs[name]
        for axis, want in enumerate(spec.shape, start=1):
            if not profile.min[axis] <= want <= profile.max[axis]:
                raise ContractError(
                    f"optimization profile {index}: tensor {name!r} allows dimension {axis} in "
                    f"[{profile.min[axis]}, {profile.max[axis]}], the contract needs {want}"
                )
        low, high = max(low, profile.min[0]), min(high, profile.max[0])
        opt = max(opt, profile.opt[0])
    if high < low:
        raise ContractError(
            f"optimization profile {index}: the inputs' batch ranges do not overlap"
        )
    top = int(high)
    return BatchRange(min=low, opt=min(max(opt, low), top), max=top)


def choose_profile(ranges: Sequence[BatchRange], batch: int) -> int:
    """The profile for ``batch``: among those that accept it, the one whose optimum is closest
    (ties: the narrower range, then the lower index)."""
    candidates = [i for i, r in enumerate(ranges) if batch in r]
    if not candidates:
        shown = ", ".join(f"[{r.min}, {r.max}]" for r in ranges) or "none"
        raise BackendError(f"no optimization profile accepts batch {batch} (profiles: {shown})")
    return min(
        candidates,
        key=lambda i: (abs(ranges[i].opt - batch), ranges[i].max - ranges[i].min, i),
    )


def batch_capacity(ranges: Sequence[BatchRange], max_batch: int) -> int:
    """The batch the buffers are sized for: ``max_batch``, which some profile must accept."""
    largest = max((r.max for r in ranges), default=0)
    if max_batch > largest:
        raise BackendError(
            f"the engine accepts batches up to {largest}, the configuration asks for {max_batch}; "
            "rebuild it with a larger profile or lower max_batch"
        )
    return max_batch


def check_engine_io(contract: IOContract, tensors: Sequence[EngineTensor]) -> None:
    """Raise ContractError naming the tensor unless the engine's I/O tensors match the contract
    (names, direction, rank, static dimensions); dtypes may differ (converted on copy)."""
    by_name = {tensor.name: tensor for tensor in tensors}
    expected: list[tuple[TensorSpec, bool]] = [(s, True) for s in contract.inputs]
    expected.append((contract.output, False))
    for spec, is_input in expected:
        kind = "input" if is_input else "output"
        tensor = by_name.get(spec.name)
        if tensor is None or tensor.is_input != is_input:
            found = ", ".join(sorted(by_name)) or "none"
            raise ContractError(
                f"engine has no {kind} tensor {spec.name!r} (it has {found}); "
                f"expected {spec.describe()}"
            )
        numpy_dtype(tensor.dtype)
        dims = tensor.shape[1:]
        if len(tensor.shape) != len(spec.shape) + 1 or any(
            found_dim not in (-1, want) for found_dim, want in zip(dims, spec.shape, strict=True)
        ):
            shown = ",".join("?" if d < 0 else str(d) for d in tensor.shape)
            raise ContractError(
                f"engine tensor {spec.name!r} has shape [{shown}], expected "
                f"[B,{','.join(str(d) for d in spec.shape)}]"
            )
    known = {spec.name for spec in contract.inputs}
    extra = sorted(t.name for t in tensors if t.is_input and t.name not in known)
    if extra:
        raise ContractError(f"engine has an input tensor {extra[0]!r} the contract does not know")
