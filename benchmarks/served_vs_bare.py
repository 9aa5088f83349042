"""Served vs bare: frames/s through the gRPC server (batching, compositing, JPEG) against the
bare backend at the same batch size, with the server's per-stage times.

Bare: ``backend.infer`` on batches of ``--batch`` random inputs, back to back, in this process.
Served: a ``lipsync serve`` process (``max_batch_size = --batch``) fed by ``--streams`` concurrent
StreamGenerate calls, so that full batches form; every frame is composited into a 1280x720 avatar
frame and JPEG-encoded. The bare backend runs before and after the served run (the mean is the
reference), to even out drift on a shared machine. Prints a Markdown fragment.

    uv run python benchmarks/served_vs_bare.py --batch 2 --frames 24
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import grpc
import numpy as np
import onnxruntime as ort

from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.contract import preset
from lipsync_core.samples import random_inputs
from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server.audio import synthetic_features
from lipsync_server.client import LipSyncStub, stream_frames
from lipsync_server.demo import ensure_assets
from lipsync_server.process import ServerProcess

CONTRACT = preset("unet328-ave")


@dataclass(frozen=True)
class ServedRun:
    frames: int
    seconds: float
    timings: list[pb.FrameTimings]
    jpeg_bytes: int


def bare_frames_per_second(model: Path, batch: int, frames: int, threads: int) -> float:
    backend = load_backend(
        model,
        CONTRACT,
        BackendConfig(kind="onnxruntime-cpu", intra_op_threads=threads, max_batch=batch),
    )
    inputs = random_inputs(CONTRACT, batch, np.random.default_rng(0))
    backend.infer(inputs)  # warm-up
    runs = max(1, frames // batch)
    started = time.perf_counter()
    for _ in range(runs):
        backend.infer(inputs)
    elapsed = time.perf_counter() - started
    backend.close()
    return runs * batch / elapsed


async def served_run(target: str, streams: int, frames: int) -> ServedRun:
    per_stream = max(1, frames // streams)
    timings: list[pb.FrameTimings] = []
    sizes: list[int] = []

    async def one(channel: grpc.aio.Channel, seed: int) -> None:
        features = synthetic_features(per_stream, CONTRACT.audio_feature_dim, seed=seed)
        async for frame in stream_frames(LipSyncStub(channel), features, chunk_frames=per_stream):
            timings.append(frame.timings)
            sizes.append(len(frame.data))

    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.gather(*(one(channel, 100 + s) for s in range(streams)))  # warm-up
        timings.clear()
        sizes.clear()
        started = time.perf_counter()
        await asyncio.gather(*(one(channel, s) for s in range(streams)))
        elapsed = time.perf_counter() - started
    return ServedRun(len(timings), elapsed, timings, int(statistics.mean(sizes)))


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else 0.0


@click.command()
@click.option("--batch", default=2, show_default=True, type=click.IntRange(1), help="Batch size.")
@click.option(
    "--frames", default=24, show_default=True, type=click.IntRange(1), help="Timed frames per run."
)
@click.option(
    "--streams", default=0, type=click.IntRange(0), help="Concurrent streams (0: 2 x batch)."
)
@click.option(
    "--threads", default=0, show_default=True, help="ORT intra-op threads (0: ORT decides)."
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the reference model and demo avatar are kept (default: a temp dir).",
)
def main(batch: int, frames: int, streams: int, threads: int, cache: Path | None) -> None:
    streams = streams or 2 * batch
    with tempfile.TemporaryDirectory() as scratch:
        cache_dir = cache or Path(scratch)
        model, avatar = ensure_assets(cache_dir, lambda line: click.echo(line, err=True))
        load_before = os.getloadavg()
        bare_before = bare_frames_per_second(model, batch, frames, threads)
        click.echo(f"bare (before): {bare_before:.2f} frames/s", err=True)
        server = ServerProcess(
            model,
            avatar,
            Path(scratch) / "server.log",
            metrics=False,
            max_batch_size=batch,
            max_queue_size=max(64, streams * batch),
            intra_op_threads=threads,
            max_queue_delay_microseconds=100_000,
        )
        with server:
            served = asyncio.run(served_run(server.target, streams, frames))
        click.echo(f"served: {served.frames / served.seconds:.2f} frames/s", err=True)
        bare_after = bare_frames_per_second(model, batch, frames, threads)
        load_after = os.getloadavg()
    bare = (bare_before + bare_after) / 2
    served_fps = served.frames / served.seconds
    t = served.timings
    click.echo(
        f"Machine: {platform.machine()} VM, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, "
        f"onnxruntime {ort.__version__}"
    )
    click.echo(
        f"Command: `uv run python benchmarks/served_vs_bare.py --batch {batch} --frames {frames}"
        f"{f' --streams {streams}' if streams != 2 * batch else ''}"
        f"{f' --threads {threads}' if threads else ''}`"
    )
    click.echo(
        "Load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}; "
        "after: {:.2f} {:.2f} {:.2f}".format(*load_before, *load_after)
    )
    click.echo("")
    click.echo("| run | batch | frames | frames/s | vs bare |")
    click.echo("| --- | ---: | ---: | ---: | ---: |")
    click.echo(
        f"| bare backend (before / after) | {batch} | {frames} | "
        f"{bare_before:.2f} / {bare_after:.2f} | 1.00 |"
    )
    click.echo(
        f"| served: gRPC stream, 1280x720 composite, JPEG | {batch} | {served.frames} | "
        f"{served_fps:.2f} | {served_fps / bare:.2f} |"
    )
    click.echo("")
    click.echo(
        f"Served per-frame stage times (mean, ms; {streams} streams, "
        f"mean JPEG {served.jpeg_bytes / 1024:.0f} KiB):"
    )
    click.echo("")
    click.echo(
        "| queue | preprocess (batch) | infer (batch) | postprocess | encode | total | mean batch |"
    )
    click.echo("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    click.echo(
        f"| {_mean([x.queue_ms for x in t]):.1f} | {_mean([x.preprocess_ms for x in t]):.1f} | "
        f"{_mean([x.infer_ms for x in t]):.1f} | {_mean([x.postprocess_ms for x in t]):.1f} | "
        f"{_mean([x.encode_ms for x in t]):.1f} | {_mean([x.total_ms for x in t]):.1f} | "
        f"{_mean([float(x.batch_size) for x in t]):.2f} |"
    )


if __name__ == "__main__":
    main()
