"""TensorRT backend (10 and 11): a serialized plan run through named tensors on one CUDA stream.

The runtime calls used here (``Runtime.deserialize_cuda_engine``, ``ICudaEngine.num_io_tensors``,
``get_tensor_name/mode/dtype/shape``, ``get_tensor_profile_shape``, ``create_execution_context``,
``IExecutionContext.set_optimization_profile_async``, ``set_tensor_address``, ``set_input_shape``,
``execute_async_v3``) are the same in TensorRT 10 and 11; older versions are refused.

Pinned host buffers and device buffers are sized for the largest configured batch, allocated once
and reused; each call copies inputs in, picks the optimization profile for the batch size, sets
input shapes, enqueues ``execute_async_v3`` and copies the output back. One execution context per
CUDA stream: to run engines concurrently, load one backend per worker. ``tensorrt`` is imported
only when a backend is created, so ``is_available()`` stays cheap and the module imports anywhere.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipsync_contract.errors import BackendError, ModelFileError
from lipsync_contract.kinds import Precision
from lipsync_contract.modelio import IOContract, TensorSpec
from lipsync_core.backends import cuda_runtime
from lipsync_core.backends.artifact_facts import artifact_facts
from lipsync_core.backends.base import BackendConfig, BackendInfo
from lipsync_core.backends.tensorrt_api import ICudaEngine, TensorRTModule, load_tensorrt
from lipsync_core.backends.tensorrt_plan import (
    BatchRange,
    EngineTensor,
    ProfileShapes,
    array_at,
    batch_capacity,
    check_engine_io,
    choose_profile,
    numpy_dtype,
    profile_batch_range,
    tensor_nbytes,
)

log = logging.getLogger(__name__)

OLDEST_TENSORRT = 10


def is_available() -> bool:
    """True when a real ``tensorrt`` package is installed (type stubs alone do not count)."""
    spec = importlib.util.find_spec("tensorrt")
    return spec is not None and spec.origin is not None


@dataclass
class _Buffer:
    """One tensor's pinned host array and device allocation, sized for the batch capacity."""

    spec: TensorSpec
    dtype: np.dtype[np.generic]
    host_pointer: int
    host: np.ndarray
    device: int

    @classmethod
    def allocate(cls, spec: TensorSpec, dtype: np.dtype[np.generic], capacity: int) -> _Buffer:
        shape = spec.batch_shape(capacity)
        nbytes = tensor_nbytes(shape, dtype)
        host_pointer = cuda_runtime.malloc_pinned(nbytes)
        host = array_at(host_pointer, shape, dtype)
        try:
            device = cuda_runtime.malloc_device(nbytes)
        except BackendError:
            cuda_runtime.free_pinned(host_pointer)
            raise
        return cls(spec, dtype, host_pointer, host, device)

    def nbytes(self, batch: int) -> int:
        return tensor_nbytes(self.spec.batch_shape(batch), self.dtype)

    def free(self) -> None:
        cuda_runtime.free_device(self.device)
        cuda_runtime.free_pinned(self.host_pointer)


def _engine_tensors(trt: TensorRTModule, engine: ICudaEngine) -> list[EngineTensor]:
    tensors = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        dims = engine.get_tensor_shape(name)
        tensors.append(
            EngineTensor(
                name=name,
                is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                dtype=engine.get_tensor_dtype(name).name,
                shape=tuple(dims[axis] for axis in range(len(dims))),
            )
        )
    return tensors


def _profile_ranges(
    engine: ICudaEngine, contract: IOContract, tensors: list[EngineTensor]
) -> list[BatchRange]:
    static = {t.name: t.shape for t in tensors if t.is_input and min(t.shape, default=0) >= 0}
    ranges = []
    for index in range(engine.num_optimization_profiles):
        shapes = {}
        for spec in contract.inputs:
            if spec.name in static:  # a static input has no profile: min = opt = max
                fixed = static[spec.name]
                shapes[spec.name] = ProfileShapes(min=fixed, opt=fixed, max=fixed)
                continue
            low, opt, high = engine.get_tensor_profile_shape(spec.name, index)
            shapes[spec.name] = ProfileShapes(
                min=tuple(low[a] for a in range(len(low))),
                opt=tuple(opt[a] for a in range(len(opt))),
                max=tuple(high[a] for a in range(len(high))),
            )
        ranges.append(profile_batch_range(index, shapes, contract))
    return ranges


def _engine_precision(tensors: list[EngineTensor]) -> Precision:
    """A plan does not record its builder flags; half-precision I/O is the visible hint."""
    return "fp16" if any(t.dtype == "HALF" for t in tensors) else "fp32"


class TensorRTBackend:
    """A deserialized TensorRT plan with one execution context on one CUDA stream."""

    def __init__(
        self,
        artifact: Path,
        contract: IOContract,
        config: BackendConfig,
        reason: str = "",
        precision: Precision | None = None,
    ) -> None:
        trt = load_tensorrt()
        major = trt.__version__.split(".", 1)[0]
        if not major.isdigit() or int(major) < OLDEST_TENSORRT:
            raise BackendError(
                f"TensorRT {trt.__version__} is too old: this backend runs TensorRT 10 and 11"
            )
        try:
            plan = artifact.read_bytes()
        except OSError as exc:
            raise ModelFileError(f"{artifact}: cannot read the engine: {exc.strerror}") from None
        cuda_runtime.set_device(config.device_id)
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise BackendError(
                f"{artifact}: TensorRT {trt.__version__} cannot deserialize this engine "
                "(built by another TensorRT version or for another GPU, or not a plan)"
            )
        self._engine: ICudaEngine = engine
        self._contract = contract
        self._config = config
        self._artifact = artifact
        self._reason = reason
        self._version = f"tensorrt {trt.__version__}"
        tensors = _engine_tensors(trt, engine)
        check_engine_io(contract, tensors)
        recorded = precision or artifact_facts(artifact).precision  # the build manifest's word
        self._precision: Precision = recorded or _engine_precision(tensors)
        self._ranges = _profile_ranges(engine, contract, tensors)
        self._capacity = batch_capacity(self._ranges, config.max_batch)
        dtypes = {t.name: numpy_dtype(t.dtype) for t in tensors}
        self._lock = threading.Lock()
        self._buffers: dict[str, _Buffer] = {}
        self._stream: cuda_runtime.Stream | None = None
        try:
            for spec in (*contract.inputs, contract.output):
                self._buffers[spec.name] = _Buffer.allocate(spec, dtypes[spec.name], self._capacity)
            self._stream = cuda_runtime.Stream()
            context = engine.create_execution_context()
            if context is None:
                raise BackendError(f"{artifact}: TensorRT could not create an execution context")
            self._context = context
            self._profile = -1
        except BackendError:
            self.close()
            raise
        log.info(
            "TensorRT engine %s: profiles %s, buffers for batch %d",
            artifact.name,
            [(r.min, r.opt, r.max) for r in self._ranges],
            self._capacity,
        )

    @property
    def contract(self) -> IOContract:
        return self._contract

    def describe(self) -> BackendInfo:
        return BackendInfo(
            kind="tensorrt",
            provider="TensorRT",
            precision=self._precision,
            device=f"cuda:{self._config.device_id}",
            artifact=str(self._artifact),
            batch_sizes=(min(r.min for r in self._ranges), self._capacity),
            version=self._version,
            reason=self._reason,
        )

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        batch = inputs[self._contract.batch_input.name].shape[0]
        if not 1 <= batch <= self._capacity:
            raise BackendError(
                f"batch of {batch} is outside the engine's range [1, {self._capacity}]"
            )
        with self._lock:
            return self._run(inputs, batch)

    def staging(self, batch: int) -> dict[str, np.ndarray]:
        """Views of the pinned input buffers: a caller that writes a batch here saves the host
        copy of ``infer`` (valid until the next call)."""
        return {spec.name: self._buffers[spec.name].host[:batch] for spec in self._contract.inputs}

    def _use_profile(self, batch: int, stream: cuda_runtime.Stream) -> None:
        profile = choose_profile(self._ranges, batch)
        if profile == self._profile:
            return
        if not self._context.set_optimization_profile_async(profile, stream.handle):
            raise BackendError(f"TensorRT refused optimization profile {profile}")
        for name, buffer in self._buffers.items():
            if not self._context.set_tensor_address(name, buffer.device):
                raise BackendError(f"TensorRT refused the device address of tensor {name!r}")
        self._profile = profile

    def _run(self, inputs: dict[str, np.ndarray], batch: int) -> np.ndarray:
        stream = self._stream
        if stream is None:
            raise BackendError(f"{self._artifact.name}: the backend is closed")
        cuda_runtime.set_device(self._config.device_id)  # the calling thread may be new
        self._use_profile(batch, stream)
        for spec in self._contract.inputs:
            buffer = self._buffers[spec.name]
            host = buffer.host[:batch]
            if inputs[spec.name].ctypes.data != host.ctypes.data:  # not written via staging()
                np.copyto(host, inputs[spec.name], casting="same_kind")
            stream.copy_to_device(buffer.device, buffer.host_pointer, buffer.nbytes(batch))
            shape = spec.batch_shape(batch)
            if not self._context.set_input_shape(spec.name, shape):
                raise BackendError(f"TensorRT refused shape {list(shape)} for tensor {spec.name!r}")
        if not self._context.execute_async_v3(stream.handle):
            raise BackendError(f"TensorRT execution failed for a batch of {batch}")
        output = self._buffers[self._contract.output.name]
        stream.copy_to_host(output.host_pointer, output.device, output.nbytes(batch))
        stream.synchronize()
        return np.array(output.host[:batch], dtype=np.float32)

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                self._stream.synchronize()
            for buffer in self._buffers.values():
                buffer.free()
            self._buffers.clear()
            if self._stream is not None:
                self._stream.destroy()
                self._stream = None
