"""The bare backend: the same artifact, in this process, no gRPC, no avatar, no compositing.
The ceiling the served figures are compared with."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lipsync_bench.result import BareResult
from lipsync_contract.modelio import preset
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.samples import random_inputs


def bare_batch_times(
    artifact: Path,
    batch_size: int,
    iterations: int,
    *,
    io_preset: str = "unet328-ave",
    backend_kind: str = "auto",
    warmup: int = 1,
) -> list[float]:
    """Milliseconds of ``iterations`` model calls of ``batch_size`` frames after ``warmup``
    untimed ones."""
    contract = preset(io_preset)
    config = BackendConfig.model_validate({"kind": backend_kind, "max_batch": batch_size})
    backend = load_backend(artifact, contract, config)
    try:
        inputs = random_inputs(contract, batch_size, np.random.default_rng(0))
        for _ in range(warmup):
            backend.infer(inputs)
        times_ms = []
        for _ in range(iterations):
            start = time.perf_counter()
            backend.infer(inputs)
            times_ms.append((time.perf_counter() - start) * 1000.0)
    finally:
        backend.close()
    return times_ms


def summarize_bare(batch_size: int, times_ms: list[float]) -> BareResult:
    values = np.asarray(times_ms)
    mean = float(values.mean())
    return BareResult(
        batch_size=batch_size,
        iterations=len(times_ms),
        infer_ms_mean=mean,
        infer_ms_p50=float(np.percentile(values, 50)),
        infer_ms_p99=float(np.percentile(values, 99)),
        fps=batch_size / mean * 1000.0,
    )
