"""Backends behind one small interface: ONNX Runtime (CPU, CUDA, TensorRT-RTX) and TensorRT 10."""

from lipsync_contract.kinds import BackendKind, Precision
from lipsync_core.backends.base import Backend, BackendConfig, BackendInfo
from lipsync_core.backends.select import load_backend

__all__ = ["Backend", "BackendConfig", "BackendInfo", "BackendKind", "Precision", "load_backend"]
