"""ONNX Runtime backend: CPU (the embedded default), CUDA with IO binding, TensorRT-RTX EP."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from lipsync_contract.errors import BackendError, ModelFileError
from lipsync_contract.kinds import BackendKind, Precision
from lipsync_contract.modelio import IOContract
from lipsync_core.backends.artifact_facts import artifact_facts
from lipsync_core.backends.base import BackendConfig, BackendInfo
from lipsync_core.backends.ort_plugins import rtx_plugin_installed, rtx_session_options
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
    """ORT backends installed here (CUDA needs onnxruntime-gpu, TensorRT-RTX its plugin wheel)."""
    providers = set(ort.get_available_providers())
    kinds = [kind for kind, provider in _PROVIDERS.items() if provider in providers]
    return [*kinds, "tensorrt-rtx"] if rtx_plugin_installed() else kinds


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


def cuda_provider_options(config: BackendConfig) -> dict[str, str]:
    """CUDA EP options: NHWC kernels for the convolutions, and CUDA graphs (one per batch size,
    selected with the ``gpu_graph_id`` run option) when asked for."""
    options = {"device_id": str(config.device_id), "prefer_nhwc": "1"}
    if config.cuda_graphs:
        options["enable_cuda_graph"] = "1"
    return options


def cuda_fallback_reason(session_providers: list[str]) -> str:
    """Why a session created for the CUDA EP does not run on it ("" when it does): ONNX Runtime
    drops an EP whose libraries fail to load (a CUDA 12 wheel on a CUDA 13 host, no cuDNN) and
    runs everything on the CPU without raising."""
    if "CUDAExecutionProvider" in session_providers:
        return ""
    return (
        "ONNX Runtime could not load the CUDA execution provider (CUDA/cuDNN libraries missing "
        "or of another major version; see the ONNX Runtime log) and fell back to "
        f"{', '.join(session_providers) or 'no provider'}"
    )


def session_options(config: BackendConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = _OPT_LEVELS[config.graph_optimization]
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = config.inter_op_threads
    options.log_severity_level = 3
    return options


@dataclass
class _BoundBatch:
    """Device tensors and their IO binding for one batch size, created once and reused."""

    binding: ort.IOBinding
    inputs: dict[str, ort.OrtValue]
    output: ort.OrtValue
    run_options: ort.RunOptions


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OnnxRuntimeBackend:
    """One ORT session. On CUDA, inputs and outputs live in device tensors bound once per batch
    size and updated in place, so a call allocates no device memory."""

    def __init__(
        self,
        artifact: Path,
        contract: IOContract,
        config: BackendConfig,
        kind: BackendKind = "onnxruntime-cpu",
        reason: str = "",
    ) -> None:
        if kind not in _PROVIDERS:
            raise BackendError(f"{kind} is not an ONNX Runtime backend")
        provider = _PROVIDERS[kind]
        if kind != "tensorrt-rtx" and provider not in ort.get_available_providers():
            raise BackendError(
                f"{kind}: ONNX Runtime here has no {provider} "
                f"(available: {', '.join(ort.get_available_providers())})"
            )
        self._contract = contract
        self._config = config
        self._kind: BackendKind = kind
        self._artifact = artifact
        self._precision = artifact_facts(artifact).precision or model_precision(artifact)
        self._reason = reason
        options = session_options(config)
        providers: list[Any] | None = [provider]
        if kind == "onnxruntime-cuda":
            providers = [(provider, cuda_provider_options(config)), "CPUExecutionProvider"]
        elif kind == "tensorrt-rtx":
            options, providers = rtx_session_options(options, config.device_id), None
        try:
            self._session = ort.InferenceSession(
                str(artifact), sess_options=options, providers=providers
            )
        except Exception as exc:  # ORT raises its own untyped exceptions
            if kind == "onnxruntime-cpu":
                raise ModelFileError(
                    f"{artifact}: ONNX Runtime cannot load it: {_first_line(exc)}"
                ) from None
            # The file already parsed as ONNX (model_precision), so the device refused it.
            raise BackendError(f"{kind} cannot run {artifact}: {_first_line(exc)}") from None
        if kind == "onnxruntime-cuda":
            fallback = cuda_fallback_reason(self._session.get_providers())
            if fallback:
                raise BackendError(f"onnxruntime-cuda: {fallback}")
        self._bound: dict[int, _BoundBatch] = {}

    @property
    def contract(self) -> IOContract:
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
        if self._kind != "onnxruntime-cuda":
            result = self._session.run([self._contract.output.name], inputs)
            return np.asarray(result[0], dtype=np.float32)
        batch = inputs[self._contract.batch_input.name].shape[0]
        bound = self._bound.get(batch) or self._bind(batch)
        for name, value in bound.inputs.items():
            value.update_inplace(np.ascontiguousarray(inputs[name]))
        self._session.run_with_iobinding(bound.binding, bound.run_options)
        return np.asarray(bound.output.numpy(), dtype=np.float32)

    def _bind(self, batch: int) -> _BoundBatch:
        if not 1 <= batch <= self._config.max_batch:
            raise BackendError(f"batch of {batch} is outside [1, {self._config.max_batch}]")
        device = self._config.device_id
        binding = self._session.io_binding()
        inputs = {}
        for spec in self._contract.inputs:
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                spec.batch_shape(batch), np.dtype(spec.dtype), "cuda", device
            )
            binding.bind_ortvalue_input(spec.name, value)
            inputs[spec.name] = value
        output_spec = self._contract.output
        output = ort.OrtValue.ortvalue_from_shape_and_type(
            output_spec.batch_shape(batch), np.dtype(output_spec.dtype), "cuda", device
        )
        binding.bind_ortvalue_output(output_spec.name, output)
        run_options = ort.RunOptions()
        if self._config.cuda_graphs:  # graph ids start at 1; -1 would disable capture
            run_options.add_run_config_entry("gpu_graph_id", str(batch))
        self._bound[batch] = _BoundBatch(binding, inputs, output, run_options)
        log.debug("bound device tensors for batch %d on cuda:%d", batch, device)
        return self._bound[batch]

    def close(self) -> None:
        self._bound.clear()
