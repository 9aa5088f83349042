"""Typed view of the part of the TensorRT Python API the backend uses (the same in 10 and 11).

Signatures follow ``tensorrt-stubs`` 10.13. mypy cannot read those stubs directly: the package ships
``tensorrt/__init__.pyi`` without a ``py.typed`` marker, and its ``tensorrt_bindings`` stub does not
parse (a parameter named ``in``). These protocols keep the backend strictly typed meanwhile;
``load_tensorrt()`` returns the real module under this type.
"""

from __future__ import annotations

import importlib
from typing import Protocol, cast

from lipsync_contract.errors import BackendError


class Dims(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> int: ...


class DataType(Protocol):
    @property
    def name(self) -> str: ...


class IExecutionContext(Protocol):
    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool: ...

    def set_tensor_address(self, name: str, memory: int) -> bool: ...

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool: ...

    def execute_async_v3(self, stream_handle: int) -> bool: ...


class ICudaEngine(Protocol):
    @property
    def num_io_tensors(self) -> int: ...

    @property
    def num_optimization_profiles(self) -> int: ...

    def get_tensor_name(self, index: int) -> str: ...

    def get_tensor_mode(self, name: str) -> object: ...

    def get_tensor_dtype(self, name: str) -> DataType: ...

    def get_tensor_shape(self, name: str) -> Dims: ...

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]: ...

    def create_execution_context(self) -> IExecutionContext | None: ...


class ILogger(Protocol):
    pass


class Runtime(Protocol):
    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None: ...


class LoggerFactory(Protocol):
    WARNING: object

    def __call__(self, min_severity: object) -> ILogger: ...


class TensorIOModes(Protocol):
    INPUT: object


class TensorRTModule(Protocol):
    __version__: str
    Logger: LoggerFactory
    TensorIOMode: TensorIOModes

    def Runtime(self, logger: ILogger) -> Runtime: ...  # noqa: N802 (TensorRT's class name)


def load_tensorrt() -> TensorRTModule:
    """Import TensorRT, turning a missing or broken install into a one-line BackendError."""
    try:
        module = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise BackendError(f"TensorRT is not usable here: {exc}") from None
    if not hasattr(module, "Runtime"):
        raise BackendError("TensorRT is not installed here (only its type stubs are)")
    return cast(TensorRTModule, module)
