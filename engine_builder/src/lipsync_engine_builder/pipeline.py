"""The build pipeline: ingest -> optimize -> precision -> build -> verify -> measure -> publish.

``execute`` never raises: every outcome is a BuildResult with the Job's exit code.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from lipsync_contract.cache import result_from_manifest
from lipsync_contract.digest import sha256_file
from lipsync_contract.errors import LipSyncError
from lipsync_contract.kinds import Precision
from lipsync_contract.manifest import Accuracy, Manifest
from lipsync_contract.request import TORCH_BACKENDS, BuildBackend, BuildRequest
from lipsync_contract.result import BuildResult
from lipsync_core.backends.base import Backend, BackendConfig
from lipsync_engine_builder.accuracy import check_gate, compare, min_psnr_for
from lipsync_engine_builder.cache import EngineCache
from lipsync_engine_builder.calibration import Sample, load_calibration, split_held_out
from lipsync_engine_builder.errors import (
    EXIT_OK,
    AccuracyGateError,
    BadInputError,
    exit_code_for,
    one_line,
)
from lipsync_engine_builder.progress import Progress
from lipsync_engine_builder.sources import fetch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Prepared:
    original: Path
    model: Path
    model_sha256: str
    held_out: list[Sample]
    optimization: dict[str, int]


def execute(request: BuildRequest, progress: Progress) -> BuildResult:
    start = time.perf_counter()
    key = ""
    try:
        key = request.key()
        cache = EngineCache(request.cache)
        cached = cache.lookup(key)
        if cached is not None:
            progress.info("cache hit", key=key)
            return result_from_manifest(
                cached,
                cache.root,
                cache_hit=True,
                seconds=time.perf_counter() - start,
                reason="cache hit",
            )
        cache.ensure_writable()
        with tempfile.TemporaryDirectory(prefix="lipsync-build-") as workdir:
            return _build(
                request, key=key, cache=cache, workdir=Path(workdir), progress=progress, start=start
            )
    except Exception as exc:  # the Job must always report a result and an exit code
        if not isinstance(exc, LipSyncError):
            log.exception("build failed unexpectedly")
        gate = exc if isinstance(exc, AccuracyGateError) else None
        return BuildResult(
            key=key,
            state="Failed",
            reason=one_line(exc),
            psnr_db=None if gate is None or gate.psnr_db is None else round(gate.psnr_db, 2),
            max_abs_error=gate.max_abs_error if gate else None,
            build_seconds=round(time.perf_counter() - start, 2),
            exit_code=exit_code_for(exc),
        )


def _prepare(request: BuildRequest, workdir: Path, progress: Progress) -> _Prepared:
    from lipsync_engine_builder.ingest import ingest
    from lipsync_engine_builder.optimize import optimize
    from lipsync_engine_builder.precision import QuantizationTarget, apply_precision
    from lipsync_engine_builder.targets import preflight
    from lipsync_engine_builder.targets.profiles import tensorrt_major, tensorrt_typing

    contract = request.contract()
    torch_source = request.backend in TORCH_BACKENDS
    with progress.stage("ingest"):
        preflight(request.backend, request.compute_capability)
        if torch_source:
            from lipsync_engine_builder.targets.torch import check_torch_precision
            from lipsync_engine_builder.torch_source import ingest_program

            check_torch_precision(request.precision)
            model = ingest_program(
                request.model, request.sha256, contract, workdir, request.batch.min
            )
        else:
            model = ingest(request.model, request.sha256, contract, workdir)
        calibration = None
        if request.precision == "int8":
            local = (
                fetch(request.calibration, workdir, "calibration") if request.calibration else None
            )
            if local is not None and request.calibration_sha256 and local.is_file():
                digest = sha256_file(local)
                if digest != request.calibration_sha256:
                    raise BadInputError(
                        f"calibration {request.calibration}: sha256 does not match the pinned one"
                    )
            calibration = load_calibration(
                local, contract, request.calibration_samples, request.allow_random_calibration
            )
        used, held_out = split_held_out(
            calibration, request.calibration_samples, request.verify_samples, contract
        )
        progress.info("model", sha256=model.sha256, nodes=model.nodes, calibration=len(used))
    if torch_source:  # precision and layout are applied by the torch target itself
        return _Prepared(model.path, model.path, model.sha256, held_out, {})
    with progress.stage("optimize"):
        optimized = workdir / "optimized.onnx"
        report = optimize(model.path, optimized, contract)
        progress.info("graph", **report.as_dict())
    with progress.stage("precision"):
        prepared = workdir / "prepared.onnx"
        onnx_precision: Precision = request.precision
        if request.backend == "tensorrt":
            # TensorRT 10's FP16 flag converts an fp32 ONNX; TensorRT 11 needs an fp16 ONNX.
            major = tensorrt_major(request.resolved_runtime())
            onnx_precision = tensorrt_typing(major, request.precision).onnx_precision
        target: QuantizationTarget = (
            "tensorrt" if request.backend in ("tensorrt", "tensorrt-rtx") else "onnxruntime"
        )
        apply_precision(optimized, prepared, onnx_precision, used, target)
    return _Prepared(model.path, prepared, model.sha256, held_out, report.as_dict())


def reference_config(backend: BuildBackend) -> BackendConfig:
    """The fp32 reference every artifact is gated against: ORT CPU on the ONNX, or the
    ``torch.export`` program run eagerly on the CPU for the PyTorch targets."""
    if backend in TORCH_BACKENDS:
        return BackendConfig(kind="torch", device="cpu", channels_last=False)
    return BackendConfig(kind="onnxruntime-cpu")


def _run_all(backend: Backend, samples: list[Sample]) -> list[np.ndarray]:
    return [backend.infer(sample) for sample in samples]


def _build(
    request: BuildRequest,
    *,
    key: str,
    cache: EngineCache,
    workdir: Path,
    progress: Progress,
    start: float,
) -> BuildResult:
    from lipsync_core.backends import load_backend
    from lipsync_engine_builder.measure import measure
    from lipsync_engine_builder.targets import BuildContext, TensorRTSettings, build_artifact
    from lipsync_engine_builder.targets.profiles import timing_cache_name

    contract = request.contract()
    prepared = _prepare(request, workdir, progress)
    config = BackendConfig(kind=request.backend, max_batch=request.batch.max)
    runtime = request.resolved_runtime()
    with progress.stage("build"):
        timing_name = timing_cache_name(request.gpu_product, runtime)
        context = BuildContext(
            model=prepared.model,
            workdir=workdir,
            contract=contract,
            batch=request.batch,
            precision=request.precision,
            timing_cache=cache.read_timing_cache(timing_name)
            if request.backend == "tensorrt"
            else b"",
        )
        settings = TensorRTSettings(
            workspace_bytes=request.workspace_mib << 20,
            optimization_level=request.optimization_level,
        )
        built = build_artifact(
            request.backend, context, config, settings, request.compute_capability
        )
        if built.timing_cache:
            cache.write_timing_cache(timing_name, built.timing_cache)
    with progress.stage("verify"):
        reference = load_backend(prepared.original, contract, reference_config(request.backend))
        expected = _run_all(reference, prepared.held_out)
        reference.close()
        backend = load_backend(built.path, contract, config)
        report = compare(expected, _run_all(backend, prepared.held_out))
        gate = min_psnr_for(request.precision, request.min_psnr)
        progress.info(
            "accuracy",
            psnr_db=round(report.psnr_db, 2),
            max_abs_error=report.max_abs_error,
            gate_db=gate,
        )
        check_gate(report, gate, request.precision)
    with progress.stage("measure"):
        throughput = measure(backend, request.batch.sizes(), request.measure_frames)
        backend.close()
        for entry in throughput:
            progress.info("throughput", **entry.model_dump())
    with progress.stage("publish"):
        artifact_sha256 = sha256_file(built.path)
        manifest = Manifest(
            key=key,
            key_inputs=request.key_inputs(),
            artifact=f"engine-{artifact_sha256[:16]}{built.path.suffix}",
            artifact_sha256=artifact_sha256,
            artifact_bytes=built.path.stat().st_size,
            precision=request.precision,
            backend=request.backend,
            runtime=runtime,
            model_uri=request.model,
            model_sha256=prepared.model_sha256,
            session_options=built.session_options,
            optimization=prepared.optimization,
            accuracy=Accuracy(
                psnr_db=report.psnr_db,
                max_abs_error=report.max_abs_error,
                min_psnr_db=gate,
                samples=report.samples,
            ),
            throughput=throughput,
            build_seconds=round(time.perf_counter() - start, 2),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        outcome = cache.publish(built.path, manifest)
        if not outcome.published:
            progress.info("another builder published this key first; using its artifact")
    reason = "published" if outcome.published else "published by another builder first"
    return result_from_manifest(
        outcome.manifest,
        cache.root,
        cache_hit=not outcome.published,
        seconds=time.perf_counter() - start,
        reason=reason,
    ).model_copy(update={"exit_code": EXIT_OK})
