"""PyTorch checkpoint -> ONNX or a ``torch.export`` program, checked: the original project's
export step, made repeatable.

Import a module, build the model with keyword arguments, load the checkpoint's state dict, then
either export ONNX in eval mode with the contract's tensor names and a dynamic batch axis (the
dynamo exporter, written as one self-contained file; the TorchScript exporter at opset 17 where
dynamo fails) and run the ONNX checker, the contract check and ONNX Runtime against PyTorch on one
random batch; or save a ``torch.export`` program with a dynamic batch (``.pt2``, what the PyTorch
backends and the ``torch-aoti`` build target take) and compare it against the module. Needs the
``[torch]`` extra; torch is imported only when an export runs.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from lipsync_contract.errors import LipSyncError
from lipsync_contract.modelio import IOContract
from lipsync_core.contract_checks import check_onnx
from lipsync_core.samples import random_inputs

log = logging.getLogger(__name__)

OPSET = 17
MAX_PROGRAM_BATCH = 64  # the batch range a saved program accepts: [1, 64]
InitValue = int | float | bool | str


class ExportError(LipSyncError):
    """The PyTorch model cannot be built, loaded, exported or does not match its export."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    parameters: int
    max_abs_error: float
    seconds: float


def parse_init_kwargs(text: str) -> dict[str, InitValue]:
    """``n_channels=6,mode=ave,scale=0.5,half=false`` -> typed keyword arguments."""
    kwargs: dict[str, InitValue] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ExportError(f"--init item {item!r} is not NAME=VALUE")
        kwargs[key.strip()] = _parse_value(raw.strip())
    return kwargs


def _parse_value(raw: str) -> InitValue:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    return raw


def import_model_class(target: str, search_path: Path | None = None) -> Callable[..., Any]:
    """``package.module:Name`` -> the class, importing from ``search_path`` (default: cwd)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ExportError(f"--module {target!r} is not MODULE:CLASS (e.g. unet_328:Model)")
    root = str((search_path or Path.cwd()).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExportError(f"cannot import {module_name!r} from {root}: {exc}") from None
    model_class = getattr(module, attr, None)
    if not callable(model_class):
        raise ExportError(f"module {module_name!r} has no class {attr!r}")
    return model_class  # type: ignore[no-any-return]


def state_dict_from(checkpoint: Any, path: Path) -> dict[str, Any]:
    """The state dict of a checkpoint: ``{'state_dict': ...}`` or a bare dict of tensors; a
    ``module.`` prefix left by DataParallel is removed."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ExportError(f"{path}: not a state dict nor a {{'state_dict': ...}} checkpoint")
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def fit_to_model(state: dict[str, Any], model_keys: list[str]) -> dict[str, Any]:
    """Match a checkpoint's key layout to the model's when the model lives under one prefix.

    The audio encoder's keys are ``audio_encoder.*``: a checkpoint of the whole audio-visual
    model also carries other sub-models (``face_encoder.*``), dropped here; one saved from the
    bare ``nn.Sequential`` lacks the prefix, added here. Any other layout is returned as is.
    """
    prefixes = {key.split(".", 1)[0] for key in model_keys}
    if len(prefixes) != 1 or not model_keys:
        return state
    prefix = prefixes.pop() + "."
    ours = {key: value for key, value in state.items() if key.startswith(prefix)}
    if ours:
        return ours
    prefixed = {prefix + key: value for key, value in state.items()}
    return prefixed if set(prefixed) & set(model_keys) else state


def _import_torch() -> Any:
    try:
        return importlib.import_module("torch")
    except ImportError:
        raise ExportError(
            "lipsync model export needs PyTorch: install the [torch] extra "
            "(pip install 'lipsync-core[torch]')"
        ) from None


def _build(
    torch: Any, target: str, init: dict[str, InitValue], checkpoint: Path, search_path: Path | None
) -> Any:
    model_class = import_model_class(target, search_path)
    try:
        model = model_class(**init)
    except Exception as exc:  # the user's constructor may raise anything
        raise ExportError(f"{target}({_format_init(init)}) failed: {exc}") from None
    try:
        loaded = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ExportError(f"{checkpoint}: no such checkpoint") from None
    except Exception as exc:  # pickle and zip errors
        raise ExportError(f"{checkpoint}: cannot load the checkpoint: {exc}") from None
    state = fit_to_model(state_dict_from(loaded, checkpoint), list(model.state_dict()))
    result = model.load_state_dict(state, strict=False)
    problems = [
        f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
        for label, keys in (
            ("missing", result.missing_keys),
            ("unexpected", result.unexpected_keys),
        )
        if keys
    ]
    if problems:
        raise ExportError(f"{checkpoint} does not fit {target}: {'; '.join(problems)}")
    return model.eval()


def _format_init(init: dict[str, InitValue]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in init.items())


def _sample_args(torch: Any, contract: IOContract, batch: int, seed: int) -> tuple[Any, ...]:
    sample = random_inputs(contract, batch, np.random.default_rng(seed))
    return tuple(torch.from_numpy(sample[spec.name]) for spec in contract.inputs)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)


def _export(torch: Any, model: Any, contract: IOContract, output: Path, opset: int) -> None:
    args = _sample_args(torch, contract, 2, 0)
    names = [spec.name for spec in (*contract.inputs, contract.output)]
    batch = torch.export.Dim("batch", min=1, max=MAX_PROGRAM_BATCH)
    output.parent.mkdir(parents=True, exist_ok=True)
    # The dynamo exporter writes weights to a side file by default; external_data=False keeps
    # one file. The TorchScript exporter (opset 17, as the original step) is the fallback.
    attempts: list[dict[str, Any]] = [
        {
            "dynamo": True,
            "external_data": False,
            "dynamic_shapes": tuple({0: batch} for _ in contract.inputs),
        },
        {
            "dynamo": False,
            "opset_version": opset,
            "dynamic_axes": {name: {0: "batch"} for name in names},
        },
    ]
    failures = []
    for attempt in attempts:
        try:
            with torch.no_grad():
                torch.onnx.export(
                    model, args, str(output), input_names=names[:-1], output_names=names[-1:],
                    **attempt,
                )  # fmt: skip
        except Exception as exc:  # the exporters raise many kinds of errors
            failures.append(_first_line(exc))
            continue
        check_single_file(output)
        return
    raise ExportError(f"torch.onnx.export failed: {' / '.join(failures)}")


def check_single_file(path: Path) -> None:
    """ExportError unless every initializer of the ONNX file is stored inside it."""
    model = onnx.load(str(path), load_external_data=False)
    external = [
        init.name
        for init in model.graph.initializer
        if init.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise ExportError(f"{path}: {len(external)} initializers live in external data files")


def export_program(torch: Any, model: Any, contract: IOContract, output: Path) -> float:
    """Save ``model`` as a ``torch.export`` program with a dynamic batch; returns the max abs
    error of the loaded program against the module on a batch of 2."""
    batch = torch.export.Dim("batch", min=1, max=MAX_PROGRAM_BATCH)
    try:
        with torch.no_grad():
            program = torch.export.export(
                model,
                _sample_args(torch, contract, 2, 0),
                dynamic_shapes=tuple({0: batch} for _ in contract.inputs),
            )
    except Exception as exc:  # torch.export raises many kinds of errors
        raise ExportError(f"torch.export failed: {_first_line(exc)}") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(output))
    args = _sample_args(torch, contract, 2, 1)
    with torch.no_grad():
        expected = model(*args)
        got = torch.export.load(str(output)).module()(*args)
    return float((got - expected).abs().max())


def max_abs_error(torch: Any, model: Any, contract: IOContract, onnx_path: Path) -> float:
    """ONNX Runtime (CPU) against PyTorch on one random batch of 3 (exercises the batch axis)."""
    inputs = random_inputs(contract, 3, np.random.default_rng(1))
    with torch.no_grad():
        expected = model(*(torch.from_numpy(inputs[s.name]) for s in contract.inputs)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run([contract.output.name], inputs)
    return float(np.max(np.abs(np.asarray(got) - expected)))


def export_checkpoint(
    target: str,
    checkpoint: Path,
    output: Path,
    contract: IOContract,
    *,
    init: dict[str, InitValue] | None = None,
    search_path: Path | None = None,
    tolerance: float = 1e-4,
    opset: int = OPSET,
) -> ExportReport:
    """Export ``target`` with ``checkpoint`` to ``output`` and verify it; ExportError otherwise.
    A ``.pt2`` output is a ``torch.export`` program, anything else ONNX."""
    start = time.perf_counter()
    torch = _import_torch()
    model = _build(torch, target, init or {}, checkpoint, search_path)
    parameters = sum(int(p.numel()) for p in model.parameters())
    log.info("exporting %s (%d parameters) to %s", target, parameters, output)
    if output.suffix == ".pt2":
        error = export_program(torch, model, contract, output)
        if not error <= tolerance:
            raise ExportError(
                f"{output}: the exported program differs from the module by {error:.2e}"
            )
        return ExportReport(output, parameters, error, time.perf_counter() - start)
    _export(torch, model, contract, output, opset)
    try:
        onnx.checker.check_model(str(output), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{output}: the ONNX checker rejects the export: {exc}") from None
    check_onnx(contract, output)
    error = max_abs_error(torch, model, contract, output)
    if not error <= tolerance:
        raise ExportError(
            f"{output}: ONNX Runtime differs from PyTorch by {error:.2e} "
            f"(tolerance {tolerance:.0e})"
        )
    return ExportReport(output, parameters, error, time.perf_counter() - start)
