"""ONNX Runtime backend: CPU (the embedded default), CUDA with IO binding, TensorRT-RTX EP."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from lipsync_core.backends.base import BackendConfig, BackendInfo, BackendKind, Precision
from lipsync_core.contract import ModelContract
from lipsync_core.errors import BackendError, ModelFileError
from lipsync_core.onnxfile import load_model_proto

log = logging.getLogger(__name__)

_PROVIDERS: dict[BackendKind, str] = {
    "onnxruntime-cpu": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "tensorrt-rtx": "NvTensorRTRTXExecutionProvider",
}
_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
PRECISION_METADATA_KEY = "lipsync.precision"


def available_kinds() -> list[BackendKind]:
    """ORT backends usable in this process (CUDA needs onnxruntime-gpu and a GPU)."""
    providers = set(ort.get_available_providers())
    return [kind for kind, provider in _PROVIDERS.items() if provider in providers]


def model_precision(path: Path) -> Precision:
    """The precision recorded by the engine builder, else read from the graph."""
    model = load_model_proto(path)
    for prop in model.metadata_props:
        if prop.key == PRECISION_METADATA_KEY and prop.value in ("fp32", "fp16", "int8"):
            return prop.value  # type: ignore[return-value]
    ops = {node.op_type for node in model.graph.node}
    if {"QuantizeLinear", "DequantizeLinear", "QLinearConv"} & ops:
        return "int8"
    if any(init.data_type == 10 for init in model.graph.initializer):
        return "fp16"
    return "fp32"


def session_options(config: BackendConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = _OPT_LEVELS[config.graph_optimization]
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = config.inter_op_threads
    options.log_severity_level = 3
    return options


class OnnxRuntimeBackend:
    """One ORT session. On CUDA, inputs/outputs go through IO binding with reused buffers."""

    def __init__(
        self,
        artifact: Path,
        contract: ModelContract,
        config: BackendConfig,
        kind: BackendKind = "onnxruntime-cpu",
        reason: str = "",
    ) -> None:
        if kind not in _PROVIDERS:
            raise BackendError(f"{kind} is not an ONNX Runtime backend")
        provider = _PROVIDERS[kind]
        if provider not in ort.get_available_providers():
            raise BackendError(
                f"{kind}: ONNX Runtime here has no {provider} "
                f"(available: {', '.join(ort.get_available_providers())})"
            )
        self._contract = contract
        self._config = config
        self._kind: BackendKind = kind
        self._artifact = artifact
        self._precision = model_precision(artifact)
        self._reason = reason
        providers: list[Any] = [provider]
        if kind == "onnxruntime-cuda":
            providers = [(provider, {"device_id": config.device_id}), "CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(
                str(artifact), sess_options=session_options(config), providers=providers
            )
        except Exception as exc:  # ORT raises its own untyped exceptions
            reason_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc)
            raise ModelFileError(
                f"{artifact}: ONNX Runtime cannot load it: {reason_line}"
            ) from None
        self._device_outputs: dict[int, ort.OrtValue] = {}
        self._binding = self._session.io_binding() if kind == "onnxruntime-cuda" else None

    @property
    def contract(self) -> ModelContract:
        return self._contract

    def describe(self) -> BackendInfo:
        return BackendInfo(
            kind=self._kind,
            provider=self._session.get_providers()[0],
            precision=self._precision,
            device="cpu" if self._kind == "onnxruntime-cpu" else f"cuda:{self._config.device_id}",
            artifact=str(self._artifact),
            batch_sizes=(1, self._config.max_batch),
            version=f"onnxruntime {ort.__version__}",
            reason=self._reason,
        )

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        if self._binding is None:
            result = self._session.run([self._contract.output.name], inputs)
            return np.asarray(result[0], dtype=np.float32)
        return self._infer_bound(inputs)

    def _infer_bound(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        assert self._binding is not None
        batch = next(iter(inputs.values())).shape[0]
        output = self._device_outputs.get(batch)
        if output is None:
            output = ort.OrtValue.ortvalue_from_shape_and_type(
                self._contract.output.batch_shape(batch), np.float32, "cuda", self._config.device_id
            )
            self._device_outputs[batch] = output
        for name, array in inputs.items():
            self._binding.bind_cpu_input(name, np.ascontiguousarray(array))
        self._binding.bind_ortvalue_output(self._contract.output.name, output)
        self._session.run_with_iobinding(self._binding)
        return np.asarray(output.numpy(), dtype=np.float32)

    def close(self) -> None:
        self._device_outputs.clear()
        self._binding = None
