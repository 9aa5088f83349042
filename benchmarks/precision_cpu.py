"""FP32 vs INT8 (static per-channel Q/DQ) on ONNX Runtime CPU, built by the engine builder.

Builds both artifacts with the builder (into a temporary cache unless ``--cache`` is given), then
times them at each batch size, alternating FP32 and INT8 calls so both see the same machine load.
Prints a Markdown fragment with the machine, the command, the load average and the int8 PSNR.

    uv run python benchmarks/precision_cpu.py --batches 1 --batches 8 --frames 16
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import onnxruntime as ort

from lipsync_contract.enginekey import BatchProfile
from lipsync_contract.kinds import Precision
from lipsync_contract.manifest import Manifest
from lipsync_contract.request import BuildRequest
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.backends.base import Backend
from lipsync_core.reference.unet328 import build_unet328
from lipsync_core.samples import random_inputs
from lipsync_engine_builder.cache import EngineCache
from lipsync_engine_builder.pipeline import execute
from lipsync_engine_builder.progress import JsonLinesProgress

log = logging.getLogger("precision_cpu")


def build_artifact(
    model: Path, cache_root: str, precision: Precision, samples: int, max_batch: int
) -> tuple[Path, Manifest]:
    request = BuildRequest(
        model=str(model),
        precision=precision,
        cache=cache_root,
        batch=BatchProfile(min=1, opt=max_batch, max=max_batch),
        calibration_samples=samples,
        allow_random_calibration=True,
        measure_frames=1,
    )
    result = execute(request, JsonLinesProgress(sys.stderr))
    if result.state != "Ready":
        raise click.ClickException(f"{precision} build failed: {result.reason}")
    manifest = EngineCache(cache_root).lookup(result.key)
    assert manifest is not None
    return Path(result.artifact), manifest


def time_alternating(
    backends: dict[str, Backend], batch: int, frames: int
) -> dict[str, list[float]]:
    """Seconds per frame of each timed call, calls alternating between the backends."""
    contract = next(iter(backends.values())).contract
    inputs = random_inputs(contract, batch, np.random.default_rng(3))
    for backend in backends.values():
        backend.infer(inputs)  # warm-up
    timings: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(max(2, frames // batch)):
        for name, backend in backends.items():
            start = time.perf_counter()
            backend.infer(inputs)
            timings[name].append((time.perf_counter() - start) / batch)
    return timings


@click.command()
@click.option(
    "--model",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="ONNX model [default: the reference UNet-328, seed 0].",
)
@click.option("--batches", multiple=True, type=int, default=(1, 8), show_default=True)
@click.option("--frames", default=16, show_default=True, help="Frames timed per batch size.")
@click.option("--calibration-samples", default=16, show_default=True)
@click.option("--cache", "cache_root", default=None, help="Cache root [default: temporary].")
def main(
    model: Path | None, batches: tuple[int, ...], frames: int, calibration_samples: int,
    cache_root: str | None,
) -> None:  # fmt: skip
    logging.basicConfig(level=logging.WARNING)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as scratch:
        if model is None:
            model = Path(scratch) / "unet328.onnx"
            model.write_bytes(build_unet328(seed=0).SerializeToString())
        root = cache_root or str(Path(scratch) / "cache")
        built = {
            precision: build_artifact(model, root, precision, calibration_samples, max(batches))
            for precision in ("fp32", "int8")
        }
        contract = built["fp32"][1].key_inputs.contract
        backends = {
            precision: load_backend(
                artifact, contract, BackendConfig(kind="onnxruntime-cpu", max_batch=max(batches))
            )
            for precision, (artifact, _) in built.items()
        }
        rows = []
        for batch in batches:
            timings = time_alternating(backends, batch, frames)
            medians = {name: statistics.median(values) for name, values in timings.items()}
            rows.append(
                f"| {batch} | {len(timings['fp32'])} | {medians['fp32'] * 1000:.1f} | "
                f"{min(timings['fp32']) * 1000:.1f} | {medians['int8'] * 1000:.1f} | "
                f"{min(timings['int8']) * 1000:.1f} | {medians['fp32'] / medians['int8']:.2f}x |"
            )
    int8_manifest = built["int8"][1]
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    click.echo(f"Machine: {platform.machine()} VM, {os.cpu_count()} cores, "
               f"Python {platform.python_version()}, onnxruntime {ort.__version__}")  # fmt: skip
    click.echo(f"Command: `uv run python benchmarks/precision_cpu.py {' '.join(sys.argv[1:])}`")
    click.echo(f"Load average (1, 5, 15 min) before: {load_before}; after: {load_after}")
    click.echo(
        f"INT8 vs FP32 on {int8_manifest.accuracy.samples} held-out inputs: "
        f"{int8_manifest.accuracy.psnr_db:.1f} dB PSNR, max abs error "
        f"{int8_manifest.accuracy.max_abs_error:.4f} ({calibration_samples} calibration samples)\n"
    )
    click.echo("| batch | timed runs | FP32 ms/frame (median) | FP32 best | INT8 ms/frame (median) "
               "| INT8 best | FP32/INT8 (median) |")  # fmt: skip
    click.echo("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        click.echo(row)


if __name__ == "__main__":
    main()
