"""The few CUDA runtime calls the TensorRT backend needs, typed, through ``cuda-python``.

``cuda.bindings.runtime`` returns ``(cudaError_t, value...)`` tuples and ships no type information;
every call here checks the error code and raises BackendError naming the call and the error.
Imported lazily by the TensorRT backend; importing this module does not touch the GPU.
"""

from __future__ import annotations

from typing import Any

from lipsync_contract.errors import BackendError


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        raise BackendError(
            f"cuda-python is not installed ({exc}); install lipsync-core[cuda]"
        ) from None
    return runtime


def checked(call: str, result: tuple[Any, ...]) -> Any:
    """The value of a ``(error, value)`` result (None for ``(error,)``), or BackendError."""
    runtime = _cudart()
    error = result[0]
    if error != runtime.cudaError_t.cudaSuccess:
        _, name = runtime.cudaGetErrorName(error)
        label = name.decode() if isinstance(name, bytes) else str(error)
        raise BackendError(f"{call} failed: {label}")
    return result[1] if len(result) > 1 else None


def device_count() -> int:
    return int(checked("cudaGetDeviceCount", _cudart().cudaGetDeviceCount()))


def compute_capability(device_id: int) -> str:
    """``major.minor`` of GPU ``device_id`` (``9.0`` for an H100)."""
    runtime = _cudart()
    attributes = runtime.cudaDeviceAttr
    major = checked(
        "cudaDeviceGetAttribute",
        runtime.cudaDeviceGetAttribute(attributes.cudaDevAttrComputeCapabilityMajor, device_id),
    )
    minor = checked(
        "cudaDeviceGetAttribute",
        runtime.cudaDeviceGetAttribute(attributes.cudaDevAttrComputeCapabilityMinor, device_id),
    )
    return f"{int(major)}.{int(minor)}"


def set_device(device_id: int) -> None:
    checked("cudaSetDevice", _cudart().cudaSetDevice(device_id))


def malloc_device(nbytes: int) -> int:
    return int(checked("cudaMalloc", _cudart().cudaMalloc(nbytes)))


def free_device(pointer: int) -> None:
    checked("cudaFree", _cudart().cudaFree(pointer))


def malloc_pinned(nbytes: int) -> int:
    """Page-locked host memory: the only kind a copy can overlap with work on the GPU."""
    return int(checked("cudaMallocHost", _cudart().cudaMallocHost(nbytes)))


def free_pinned(pointer: int) -> None:
    checked("cudaFreeHost", _cudart().cudaFreeHost(pointer))


class Stream:
    """A non-blocking CUDA stream (TensorRT warns about extra syncs on the default stream)."""

    def __init__(self) -> None:
        runtime = _cudart()
        self._stream = checked(
            "cudaStreamCreateWithFlags",
            runtime.cudaStreamCreateWithFlags(runtime.cudaStreamNonBlocking),
        )

    @property
    def handle(self) -> int:
        return int(self._stream)

    def copy_to_device(self, device: int, host: int, nbytes: int) -> None:
        self._copy(device, host, nbytes, "cudaMemcpyHostToDevice")

    def copy_to_host(self, host: int, device: int, nbytes: int) -> None:
        self._copy(host, device, nbytes, "cudaMemcpyDeviceToHost")

    def _copy(self, destination: int, source: int, nbytes: int, direction: str) -> None:
        runtime = _cudart()
        kind = getattr(runtime.cudaMemcpyKind, direction)
        result = runtime.cudaMemcpyAsync(destination, source, nbytes, kind, self._stream)
        checked("cudaMemcpyAsync", result)

    def synchronize(self) -> None:
        checked("cudaStreamSynchronize", _cudart().cudaStreamSynchronize(self._stream))

    def destroy(self) -> None:
        checked("cudaStreamDestroy", _cudart().cudaStreamDestroy(self._stream))
