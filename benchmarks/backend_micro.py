"""Backend micro-benchmark: ms/frame of the reference UNet-328 at several batch sizes.

ONNX Runtime CPU FP32 always; PyTorch eager (the same architecture, ``reference.unet328_torch``)
where torch is installed. Prints a Markdown table with the machine, the command and the load
average, so the numbers can be pasted into ``benchmarks/*.md`` as they are.

    uv run python benchmarks/backend_micro.py --batches 1,2,4,8 --frames 16
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import onnxruntime as ort
from lipsync_bench.machine import cpu_model

from lipsync_contract.modelio import preset
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.reference.unet328 import build_unet328
from lipsync_core.samples import random_inputs

log = logging.getLogger("backend_micro")

Runner = Callable[[dict[str, np.ndarray]], object]


@dataclass(frozen=True)
class Row:
    backend: str
    batch: int
    runs: int
    median_ms_per_frame: float
    best_ms_per_frame: float


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def time_batches(
    name: str, run: Runner, batches: list[int], frames: int, rng: np.random.Generator
) -> list[Row]:
    """One warm-up call per batch size, then ``frames // batch`` timed calls (at least 2)."""
    contract = preset("unet328-ave")
    rows = []
    for batch in batches:
        inputs = random_inputs(contract, batch, rng)
        run(inputs)
        runs = max(2, frames // batch)
        seconds = []
        for _ in range(runs):
            start = time.perf_counter()
            run(inputs)
            seconds.append(time.perf_counter() - start)
        row = Row(
            name,
            batch,
            runs,
            1000 * statistics.median(seconds) / batch,
            1000 * min(seconds) / batch,
        )
        log.info(
            "%s batch %d: %.1f ms/frame (median of %d)", name, batch, row.median_ms_per_frame, runs
        )
        rows.append(row)
    return rows


def _torch_runner(threads: int) -> tuple[Runner, str] | None:
    if importlib.util.find_spec("torch") is None:
        log.info("torch is not installed: PyTorch eager skipped")
        return None
    import torch

    from lipsync_core.reference.unet328_torch import Model

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Model(n_channels=6, mode="ave").eval()

    def run(inputs: dict[str, np.ndarray]) -> object:
        with torch.inference_mode():
            return model(torch.from_numpy(inputs["input"]), torch.from_numpy(inputs["audio"]))

    return run, f"torch {torch.__version__}"


def markdown(rows: list[Row], versions: list[str], command: str, loads: tuple[str, str]) -> str:
    lines = [
        f"Machine: {platform.machine()} VM, {os.cpu_count()} cores ({cpu_model()}), "
        f"Python {platform.python_version()}, {', '.join(versions)}",
        f"Command: `{command}`",
        f"Load average (1, 5, 15 min) before: {loads[0]}; after: {loads[1]}",
        "",
        "| backend | batch | timed runs | ms/frame (median) | ms/frame (best) | frames/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r.backend} | {r.batch} | {r.runs} | {r.median_ms_per_frame:.1f} | "
        f"{r.best_ms_per_frame:.1f} | {1000 / r.median_ms_per_frame:.2f} |"
        for r in rows
    ]
    return "\n".join(lines)


@click.command()
@click.option("--batches", "batch_list", default="1,2,4,8", show_default=True, help="Batch sizes.")
@click.option("--frames", default=16, show_default=True, help="Frames timed per batch size.")
@click.option(
    "--threads", default=0, show_default=True, help="CPU threads (0: the runtime's default)."
)
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--torch/--no-torch", "with_torch", default=True, help="Also time PyTorch eager.")
def main(
    *,
    batch_list: str,
    frames: int,
    threads: int,
    model_path: Path | None,
    with_torch: bool,
) -> None:
    """Time the reference UNet-328 on ORT CPU (and PyTorch eager); print a Markdown table."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        batches = [int(item) for item in batch_list.split(",") if item.strip()]
    except ValueError:
        raise click.BadParameter(f"{batch_list!r} is not a list like 1,2,4,8") from None
    command = "uv run python benchmarks/backend_micro.py " + " ".join(sys.argv[1:])
    load_before = _load()
    rng = np.random.default_rng(0)
    contract = preset("unet328-ave")
    rows: list[Row] = []
    versions = [f"onnxruntime {ort.__version__}"]
    with tempfile.TemporaryDirectory() as scratch:
        if model_path is None:
            model_path = Path(scratch) / "unet328.onnx"
            model_path.write_bytes(build_unet328(seed=0).SerializeToString())
            log.info("wrote the reference model to %s", model_path)
        config = BackendConfig(
            kind="onnxruntime-cpu", intra_op_threads=threads, max_batch=max(batches)
        )
        backend = load_backend(model_path, contract, config)
        rows += time_batches("ORT CPU FP32", backend.infer, batches, frames, rng)
        backend.close()
    torch_runner = _torch_runner(threads) if with_torch else None
    if torch_runner is not None:
        run, version = torch_runner
        versions.append(version)
        rows += time_batches("PyTorch eager FP32", run, batches, frames, rng)
    click.echo(markdown(rows, versions, command, (load_before, _load())))


if __name__ == "__main__":
    main()
