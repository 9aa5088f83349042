"""PyTorch backends (the ``[torch]`` extra): an exported program run eagerly (fp32 or fp16,
channels_last, optionally through ``torch.compile`` or one CUDA graph per batch size), and an
AOTInductor package compiled ahead of time by the engine builder's ``torch-aoti`` target.

``torch`` is imported when a backend is created, never at module import. The precision a backend
reports comes from the build manifest beside the artifact, else from what the builder stored in
the artifact, else it is the program's own (fp32).
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from lipsync_contract.errors import BackendError, ModelFileError
from lipsync_contract.kinds import BackendKind, Precision
from lipsync_contract.modelio import IOContract
from lipsync_core.backends.artifact_facts import artifact_facts
from lipsync_core.backends.base import BackendConfig, BackendInfo
from lipsync_core.backends.torch_files import SETTINGS_FILE, torch_artifact_kind
from lipsync_core.backends.torch_io import CpuIO, CudaIO, make_io

log = logging.getLogger(__name__)

AOTI_PRECISION_KEY = "lipsync.precision"  # AOTInductor package metadata written by the builder
AOTI_DEVICE_KEY = "lipsync.device"
_PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")


def import_torch() -> Any:
    try:
        return importlib.import_module("torch")
    except ImportError:
        raise BackendError(
            "the PyTorch backends need torch: install the [torch] extra "
            "(pip install 'lipsync-core[torch]')"
        ) from None


def resolve_device(requested: str, device_id: int, cuda_available: bool) -> str:
    """``cpu`` or ``cuda:N``: auto takes CUDA when torch has it; CUDA without it fails."""
    if requested == "cpu" or (requested == "auto" and not cuda_available):
        return "cpu"
    if not cuda_available:
        raise BackendError("device cuda requested, but this torch has no CUDA device")
    return f"cuda:{device_id}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _as_precision(value: object) -> Precision | None:
    return value if value in _PRECISIONS else None


def program_settings(torch: Any, artifact: Path) -> tuple[Any, dict[str, Any]]:
    """The exported program and the builder's settings stored beside it (``{}`` if none)."""
    extra = {SETTINGS_FILE: ""}
    try:
        program = torch.export.load(str(artifact), extra_files=extra)
    except Exception as exc:  # torch raises many kinds of errors for a bad archive
        raise ModelFileError(
            f"{artifact}: not a torch.export program: {_first_line(exc)}"
        ) from None
    try:
        settings = json.loads(extra[SETTINGS_FILE] or "{}")
    except ValueError:
        settings = {}
    return program, settings if isinstance(settings, dict) else {}


class _GraphRunner:
    """One CUDA graph per batch size over static device inputs (captured on first use)."""

    def __init__(self, torch: Any, module: Any) -> None:
        self._torch = torch
        self._module = module
        self._graphs: dict[int, tuple[Any, list[Any], Any]] = {}

    def __call__(self, *inputs: Any) -> Any:
        torch = self._torch
        batch = int(inputs[0].shape[0])
        if batch not in self._graphs:
            static = [tensor.clone() for tensor in inputs]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up outside the graph, as capture requires
                    self._module(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the server's other threads keep using CUDA while this one captures.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                output = self._module(*static)
            self._graphs[batch] = (graph, static, output)
        graph, static, output = self._graphs[batch]
        for target, source in zip(static, inputs, strict=True):
            target.copy_(source)
        graph.replay()
        return output


class TorchBackend:
    """An exported program (kind ``torch``) or an AOTInductor package (kind ``torch-aoti``)."""

    def __init__(
        self,
        artifact: Path,
        contract: IOContract,
        config: BackendConfig,
        kind: BackendKind = "torch",
        reason: str = "",
    ) -> None:
        torch = import_torch()
        found = torch_artifact_kind(artifact)
        if found != kind:
            shown = "an AOTInductor package" if found == "torch-aoti" else "an exported program"
            raise BackendError(f"{artifact.name} is {shown}: serve it with --backend {found}")
        self._torch = torch
        self._contract = contract
        self._config = config
        self._kind: BackendKind = kind
        self._artifact = artifact
        self._reason = reason
        self._device = resolve_device(config.device, config.device_id, torch.cuda.is_available())
        self._lock = threading.Lock()
        facts = artifact_facts(artifact)
        if kind == "torch":
            self._run, stored = self._load_program(torch, artifact, config)
        else:
            self._run, stored = self._load_package(torch, artifact)
        self._precision: Precision = facts.precision or stored or "fp32"
        self._io: CpuIO | CudaIO = make_io(torch, self._device, contract, config.max_batch)
        log.info("%s %s on %s (%s)", kind, artifact.name, self._device, self._precision)

    def _load_program(
        self, torch: Any, artifact: Path, config: BackendConfig
    ) -> tuple[Any, Precision | None]:
        program, settings = program_settings(torch, artifact)
        precision = _as_precision(settings.get("precision"))
        if precision == "int8":
            raise BackendError(f"{artifact.name}: the torch backend runs fp32 or fp16, not int8")
        module = program.module().to(self._device)
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        module = module.to(dtype=self._dtype)
        self._memory_format = torch.channels_last if config.channels_last else None
        if self._memory_format is not None:
            module = module.to(memory_format=self._memory_format)
        if config.torch_compile:
            mode = "reduce-overhead" if config.cuda_graphs else None
            return torch.compile(module, mode=mode), precision
        if config.cuda_graphs and self._device.startswith("cuda"):
            return _GraphRunner(torch, module), precision
        return module, precision

    def _load_package(self, torch: Any, artifact: Path) -> tuple[Any, Precision | None]:
        index = int(self._device.split(":")[1]) if self._device.startswith("cuda") else -1
        try:
            compiled = torch._inductor.aoti_load_package(str(artifact), device_index=index)
        except Exception as exc:  # a package for another device, torch version or CPU
            raise BackendError(
                f"{artifact.name}: torch {torch.__version__} cannot load this AOTInductor "
                f"package: {_first_line(exc)}"
            ) from None
        metadata = compiled.get_metadata() if hasattr(compiled, "get_metadata") else {}
        built_for = str(metadata.get(AOTI_DEVICE_KEY, ""))
        if built_for and built_for != self._device.split(":")[0]:
            raise BackendError(
                f"{artifact.name} was compiled for {built_for}, this backend runs on {self._device}"
            )
        self._dtype, self._memory_format = torch.float32, None  # cast inside the package
        return compiled, _as_precision(metadata.get(AOTI_PRECISION_KEY))

    @property
    def contract(self) -> IOContract:
        return self._contract

    def describe(self) -> BackendInfo:
        mode = "AOTInductor" if self._kind == "torch-aoti" else "eager"
        if self._kind == "torch" and self._config.torch_compile:
            mode = "torch.compile"
        return BackendInfo(
            kind=self._kind,
            provider=f"PyTorch {mode}",
            precision=self._precision,
            device=self._device,
            artifact=str(self._artifact),
            batch_sizes=(1, self._config.max_batch),
            version=f"torch {self._torch.__version__}",
            reason=self._reason,
        )

    def staging(self, batch: int) -> dict[str, np.ndarray]:
        """Host arrays to fill in place for the next ``infer`` (pinned memory on CUDA)."""
        return self._io.staging(batch)

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        if self._run is None:
            raise BackendError(f"{self._artifact.name}: the backend is closed")
        with self._lock, torch.inference_mode():
            output = self._run(*(self._prepare(t) for t in self._io.upload(inputs)))
            self._io.computed()
            return self._io.download(output)

    def run_resident(self, tensors: list[Any]) -> Any:
        """The model call alone on float32 tensors already on the backend's device (no host
        I/O; the benchmarks time it with CUDA events)."""
        with self._lock, self._torch.inference_mode():
            return self._run(*(self._prepare(t) for t in tensors))

    def _prepare(self, tensor: Any) -> Any:
        if self._dtype == self._torch.float32 and self._memory_format is None:
            return tensor
        tensor = tensor.to(dtype=self._dtype)
        if self._memory_format is not None:
            tensor = tensor.contiguous(memory_format=self._memory_format)
        return tensor

    def close(self) -> None:
        with self._lock:
            self._run = None
