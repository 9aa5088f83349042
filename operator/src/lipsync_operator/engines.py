"""Engine keys and engine states per GPU product."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from lipsync_contract.api import EngineStatus, LipSyncModelSpec, LipSyncModelStatus
from lipsync_contract.cache import entry_uri
from lipsync_contract.enginekey import BatchProfile
from lipsync_contract.request import BuildRequest
from lipsync_contract.result import BuildResult
from lipsync_operator.builds import followed_build, is_own
from lipsync_operator.config import OperatorConfig
from lipsync_operator.observed import BuildJob, Observed, ServedEngine
from lipsync_operator.policy import runtime_identity
from lipsync_operator.pools import GpuPool

TERMINATION_LOG = "/dev/termination-log"


def batch_profile(spec: LipSyncModelSpec) -> BatchProfile:
    """The engine serves batches 1..maxBatch and is tuned for full batches."""
    return BatchProfile(min=1, opt=spec.batching.max_batch, max=spec.batching.max_batch)


def build_request(
    spec: LipSyncModelSpec,
    product: str,
    compute_capability: str,
    config: OperatorConfig,
    cache_dir: str = "",
) -> BuildRequest:
    """The builder's request for one product: its arguments and its engine key come from it.

    ``cache_dir``: the model's private part of the cache its build writes ("": the shared one).
    """
    calibration = spec.calibration if spec.precision == "int8" else None
    optional: dict[str, object] = {}
    if calibration is not None:
        optional = {
            "calibration": calibration.uri,
            "calibration_sha256": calibration.sha256 or "",
            "calibration_samples": calibration.samples,
        }
    encoder = spec.audio_encoder
    if encoder is not None:
        optional |= {
            "audio_encoder": encoder.uri,
            "audio_encoder_sha256": encoder.sha256 or "",
            "audio_encoder_io": encoder.io,
        }
    return BuildRequest(
        model=spec.model.uri,
        sha256=spec.model.sha256 or "",
        io=spec.io.preset,
        precision=spec.precision,
        backend=config.backend,
        runtime=runtime_identity(spec, config, cache_dir),
        gpu_product=product,
        compute_capability=compute_capability,
        batch=batch_profile(spec),
        min_psnr=spec.accuracy.min_psnr_db,
        cache=config.cache.mount_path,
        termination_log=TERMINATION_LOG,
        verify_samples=config.build_verify_samples,
        measure_frames=config.build_measure_frames,
        **optional,
    )


def published_engines(status: LipSyncModelStatus | None, cache_root: str) -> dict[str, BuildResult]:
    """Engines a model's status records as Ready: known without reading the cache.

    A build Job's result reaches the status once; after the Job's TTL removes it, the status is
    where the operator (any replica, after any restart) still finds the engine. The status holds
    artifact file names; results hold their URIs under ``cache_root``, as the builder's do.
    """
    if status is None:
        return {}
    return published_results(status.engines, cache_root)


def published_results(engines: Iterable[EngineStatus], cache_root: str) -> dict[str, BuildResult]:
    """The Ready engines among ``engines`` (with an artifact), as build results by key."""
    return {
        engine.key: BuildResult(
            key=engine.key,
            state="Ready",
            psnr_db=engine.psnr_db,
            frames_per_second=engine.frames_per_second,
            build_seconds=engine.build_seconds or 0.0,
            artifact=entry_uri(cache_root, engine.key, engine.artifact),
            artifact_sha256=engine.artifact_sha256,
            cache_hit=True,
            audio_encoder=_published_encoder(engine, cache_root),
        )
        for engine in engines
        if engine.state == "Ready" and engine.key and engine.artifact
    }


def _published_encoder(engine: EngineStatus, cache_root: str) -> BuildResult | None:
    if not engine.encoder_key:
        return None
    artifact = entry_uri(cache_root, engine.encoder_key, engine.encoder_artifact)
    return BuildResult(
        key=engine.encoder_key,
        state="Ready",
        artifact=artifact,
        artifact_sha256=engine.encoder_artifact_sha256,
        cache_hit=True,
    )


def artifact_name(result: BuildResult) -> str:
    """The artifact's file name in its cache entry (what the status and the servers name)."""
    return posixpath.basename(result.artifact)


@dataclass(frozen=True)
class EngineVerdict:
    """The engine's state for one product, what to serve when Ready, and whether a build Job
    must be created."""

    status: EngineStatus
    engine: ServedEngine | None
    needs_job: bool

    @property
    def artifact(self) -> str:
        return self.engine.artifact if self.engine is not None else ""


def served_engine(key: str, result: BuildResult) -> ServedEngine:
    encoder = result.audio_encoder
    return ServedEngine(
        key=key,
        artifact=artifact_name(result),
        encoder_key=encoder.key if encoder is not None else "",
        encoder_artifact=artifact_name(encoder) if encoder is not None else "",
        artifact_sha256=result.artifact_sha256,
        encoder_artifact_sha256=encoder.artifact_sha256 if encoder is not None else "",
    )


def engine_verdict(pool: GpuPool, key: str, job_name: str, observed: Observed) -> EngineVerdict:
    """Published -> Ready; else the outcome of the key's build Job (this model's or another
    model's: see builds.py); else a Job is wanted."""
    base = {"gpu_product": pool.product, "compute_capability": pool.compute_capability, "key": key}
    job = followed_build(observed, key)
    published = observed.published.get(key)
    if not pool.present and (published is None or not key):
        reason = "NoNodes: no schedulable node has this GPU product"
        return EngineVerdict(EngineStatus(**base, state="Pending", reason=reason), None, False)
    if (
        published is not None
        and published.state == "Ready"
        and (job is None or job.phase != "Failed" or not is_own(observed, job))
    ):
        return EngineVerdict(
            _status(base, "Ready", published), served_engine(key, published), False
        )
    if job is None:
        return EngineVerdict(EngineStatus(**base, state="Building", job=job_name), None, True)
    shown = job.name if is_own(observed, job) else job.ref
    return _job_verdict({**base, "job": shown}, job, key)


def _job_verdict(base: dict[str, str], job: BuildJob, key: str) -> EngineVerdict:
    """An existing build Job's outcome; a Failed one stays failed until its TTL removes it."""
    result = job.result
    if job.phase == "Active":
        return EngineVerdict(EngineStatus(**base, state="Building"), None, False)
    if result is not None and result.state == "Ready" and result.key and result.key != key:
        reason = (
            f"KeyMismatch: the builder computed {result.key}, the operator expected {key}; "
            "the operator and the runtime image run different lipsync-contract versions"
        )
    elif job.phase == "Succeeded" and result is not None and result.state == "Ready":
        return EngineVerdict(_status(base, "Ready", result), served_engine(key, result), False)
    elif job.phase == "Succeeded":
        reason = "NoResult: the build Job succeeded without a readable termination message"
    else:
        reason = (result.reason if result is not None else "") or job.failure or "build failed"
    return EngineVerdict(_status(base, "Failed", result, reason), None, False)


def _status(
    base: dict[str, str], state: str, result: BuildResult | None, reason: str = ""
) -> EngineStatus:
    measured: dict[str, object] = {}
    if result is not None:
        measured = {
            "psnr_db": result.psnr_db,
            "frames_per_second": result.frames_per_second,
            "build_seconds": result.build_seconds,
        }
        if state == "Ready":
            measured["artifact"] = artifact_name(result)
            measured["artifact_sha256"] = result.artifact_sha256
            if result.audio_encoder is not None:
                measured["encoder_key"] = result.audio_encoder.key
                measured["encoder_artifact"] = artifact_name(result.audio_encoder)
                measured["encoder_artifact_sha256"] = result.audio_encoder.artifact_sha256
    return EngineStatus.model_validate({**base, "state": state, "reason": reason, **measured})
