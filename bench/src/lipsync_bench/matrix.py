"""``lipsync bench matrix``: build (engine builder), serve (``lipsync serve`` on loopback) and load
every backend and precision available on this machine under the same load, measure each bare
backend at the same batch size, and compare them all in one report directory."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from lipsync_bench.bare import bare_batch_times, summarize_bare
from lipsync_bench.compare import write_comparison
from lipsync_bench.loadgen import LevelPlan
from lipsync_bench.result import BenchResult
from lipsync_bench.runner import RunOptions, run_bench
from lipsync_bench.summary import CostOptions
from lipsync_contract.kinds import Precision
from lipsync_server.process import ServerProcess

TORCH_BACKENDS = ("torch", "torch-aoti")  # built from a torch.export program, not the ONNX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    backend: str
    precision: Precision

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision}"

    @property
    def slug(self) -> str:
        return f"{self.backend}-{self.precision}"


def available_variants() -> tuple[list[Variant], list[str]]:
    """Backends and precisions this machine can build and serve, and notes on those it cannot."""
    import onnxruntime as ort

    from lipsync_core.backends import tensorrt
    from lipsync_core.backends.ort_plugins import rtx_unavailable_reason

    providers = set(ort.get_available_providers())
    variants = [Variant("onnxruntime-cpu", "fp32"), Variant("onnxruntime-cpu", "int8")]
    notes = []
    if "CUDAExecutionProvider" in providers:
        variants += [Variant("onnxruntime-cuda", "fp32"), Variant("onnxruntime-cuda", "fp16")]
    else:
        notes.append("ONNX Runtime CUDA: not measured (no CUDA execution provider here)")
    rtx_reason = rtx_unavailable_reason()
    if rtx_reason:
        notes.append(f"TensorRT-RTX: not measured ({rtx_reason})")
    else:
        variants.append(Variant("tensorrt-rtx", "fp16"))
    if tensorrt.is_available():
        variants += [Variant("tensorrt", "fp16"), Variant("tensorrt", "int8")]
    else:
        notes.append("TensorRT: not measured (tensorrt is not installed here)")
    if importlib.util.find_spec("torch") is None:
        notes.append(
            "PyTorch eager (the original plan's baseline): not measured (torch is not installed)"
        )
    else:
        variants.append(Variant("torch", "fp32"))
        notes.append(
            "PyTorch eager runs the same UNet-328 architecture exported from the PyTorch "
            "reference module (seeded weights of its own), as a torch.export program"
        )
    return variants, notes


def default_work_dir() -> Path:
    """Build cache, generated inputs and server logs: kept out of the report directory, which
    is meant to be committed, and reused between runs (engines are found by key)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "lipsync" / "bench"


@dataclass
class MatrixOptions:
    out: Path
    load: RunOptions
    model: Path | None = None
    avatar: Path | None = None
    max_batch_size: int = 4
    server_args: list[str] = field(default_factory=list)
    bare_iterations: int = 20
    only: list[str] = field(default_factory=list)
    baseline: str | None = None
    costs: CostOptions = field(default_factory=CostOptions)
    work_dir: Path = field(default_factory=default_work_dir)


def prepare_inputs(options: MatrixOptions) -> tuple[Path, Path]:
    """The model and avatar: given, or the reference UNet-328 and a demo avatar made once."""
    work = options.work_dir / "inputs"
    work.mkdir(parents=True, exist_ok=True)
    model = options.model
    if model is None:
        from lipsync_core.reference.unet328 import build_unet328

        model = work / "unet328.onnx"
        if not model.exists():
            log.info("writing the reference UNet-328 to %s", model)
            model.write_bytes(build_unet328(seed=0).SerializeToString())
    avatar = options.avatar
    if avatar is None:
        from lipsync_server.avatar.demo import write_demo_avatar

        avatar = work / "avatar"
        if not (avatar / "manifest.json").exists() and not any(avatar.glob("*")):
            log.info("writing a demo avatar to %s", avatar)
            write_demo_avatar(avatar, frames=25)
    return model, avatar


def prepare_torch_program(options: MatrixOptions) -> Path:
    """The reference UNet-328 as a ``torch.export`` program (what the torch backends take),
    written once."""
    target = options.work_dir / "inputs" / "unet328.pt2"
    if not target.exists():
        import torch

        from lipsync_contract.modelio import preset
        from lipsync_core.export_torch import export_program
        from lipsync_core.reference.unet328_torch import Model

        torch.manual_seed(0)
        log.info("writing the reference UNet-328 program to %s", target)
        export_program(torch, Model().eval(), preset("unet328-ave"), target)
    return target


CALIBRATION_SAMPLES = 32
HELD_OUT_SAMPLES = 8  # written after the calibration samples; the accuracy gate checks on them


def prepare_calibration(avatar: Path, options: MatrixOptions) -> Path:
    """Int8 calibration samples from the served avatar and synthetic audio features, made once
    (what ``lipsync avatar calibration`` writes)."""
    from lipsync_contract.modelio import preset
    from lipsync_server.audio import synthetic_features
    from lipsync_server.avatar.calibration import write_avatar_calibration

    target = options.work_dir / "inputs" / "calibration.npz"
    if not target.exists():
        contract = preset("unet328-ave")
        features = synthetic_features(100, contract.audio_feature_dim, seed=11)
        count = CALIBRATION_SAMPLES + HELD_OUT_SAMPLES
        log.info("writing %d calibration samples to %s", count, target)
        write_avatar_calibration(avatar, target, contract, count, features)
    return target


def build_variant(
    variant: Variant, model: Path, avatar: Path, options: MatrixOptions
) -> tuple[Path, str]:
    """Build (or find in the matrix's cache) the artifact; returns its path and engine key."""
    from lipsync_contract.request import BuildRequest
    from lipsync_engine_builder.pipeline import execute
    from lipsync_engine_builder.progress import JsonLinesProgress

    batch = options.max_batch_size
    calibration = (
        {
            "calibration": str(prepare_calibration(avatar, options).resolve()),
            "calibration_samples": CALIBRATION_SAMPLES,
        }
        if variant.precision == "int8"
        else {}
    )
    request = BuildRequest.model_validate(
        {
            "model": str(model.resolve()),
            "precision": variant.precision,
            "backend": variant.backend,
            "batch": {"min": 1, "opt": batch, "max": batch},
            "cache": str((options.work_dir / "cache").resolve()),
            "termination_log": str(options.work_dir / f"{variant.slug}.build.json"),
            "measure_frames": 1,
            **calibration,
        }
    )
    with (options.work_dir / f"{variant.slug}.build.log").open("w") as stream:
        result = execute(request, JsonLinesProgress(stream))
    if result.state != "Ready":
        raise RuntimeError(f"build failed: {result.reason}")
    return Path(result.artifact), result.key


def run_variant(
    variant: Variant,
    model: Path,
    avatar: Path,
    *,
    options: MatrixOptions,
    command: list[str],
    on_level: Callable[[LevelPlan], Callable[[int], None]],
) -> Path:
    source = prepare_torch_program(options) if variant.backend in TORCH_BACKENDS else model
    artifact, key = build_variant(variant, source, avatar, options)
    args = [
        "--backend",
        variant.backend,
        "--max-batch-size",
        str(options.max_batch_size),
        "--model-name",
        variant.slug,
        "--log-level",
        "WARNING",
        *options.server_args,
    ]
    log_path = options.work_dir / f"{variant.slug}.server.log"
    # The bare backend runs while no server does (they never share the CPU), half before the
    # served load and half after, so that drift of the machine's speed hits both alike.
    batch, half = options.max_batch_size, max(1, options.bare_iterations // 2)
    bare_ms = bare_batch_times(artifact, batch, half, backend_kind=variant.backend)
    with ServerProcess(artifact, avatar, log_path, extra_args=args) as server:
        load = replace(
            options.load,
            targets=[server.target],
            metrics_urls=[server.metrics_url],
            server_pids=[server.pid],
            name=variant.name,
            model_key=key,
        )
        result = asyncio.run(run_bench(load, command, on_level))
    bare_ms += bare_batch_times(artifact, batch, half, backend_kind=variant.backend)
    result = result.model_copy(update={"bare": summarize_bare(batch, bare_ms)})
    path = options.out / f"{variant.slug}.json"
    result.write(path)
    return path


def run_matrix(
    options: MatrixOptions,
    command: list[str],
    echo: Callable[[str], None],
    on_level: Callable[[LevelPlan], Callable[[int], None]] = lambda plan: lambda n: None,
) -> Path:
    """Every available variant (or those named in ``only``), then ``compare``; returns the
    report path. A variant that fails to build or serve is reported and skipped."""
    options.out.mkdir(parents=True, exist_ok=True)
    options.work_dir.mkdir(parents=True, exist_ok=True)
    variants, notes = available_variants()
    if options.only:
        variants = [v for v in variants if v.name in options.only or v.slug in options.only]
    for note in notes:
        echo(f"note: {note}")
    model, avatar = prepare_inputs(options)
    options.load.notes.extend(notes)
    results: list[Path] = []
    for variant in variants:
        echo(f"{variant.name}: build, serve, load")
        try:
            results.append(
                run_variant(
                    variant, model, avatar, options=options, command=command, on_level=on_level
                )
            )
        except (RuntimeError, TimeoutError, OSError) as exc:
            echo(f"{variant.name}: skipped: {exc}")
    if not results:
        raise RuntimeError("no backend could be measured")
    names = [BenchResult.read(path).name for path in results]
    baseline = options.baseline if options.baseline in names else None
    return write_comparison(results, options.out, baseline, options.costs)
