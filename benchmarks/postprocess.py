"""What post-processing costs the host per frame: numpy (OpenCV + simplejpeg) against the torch
path (here on CPU; on CUDA it runs on the GPU), as the server runs them.

Frames: the reference UNet-328's outputs on the 1280x720 demo avatar (``reference_frames``),
composited and JPEG-encoded at the server's default quality. Streams: with 1, each frame is
post-processed after the one before (one stream's frames); with N, N frames are always waiting
for the server's ``postprocess_threads`` (2) threads, as when N streams' batches come back. CPU
is the whole process's CPU time (every thread, torch's own included) over the frames.

    uv run python benchmarks/postprocess.py --frames 200 --streams 1,16
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np
import torch
from lipsync_bench.machine import cpu_model
from lipsync_bench.reference_frames import ReferenceOutputs, reference_outputs

from lipsync_contract.server_options import ServerOptions
from lipsync_server.compositor import JpegSubsampling
from lipsync_server.postprocess import NumpyPostprocessor, Postprocessed, Postprocessor
from lipsync_server.postprocess_torch import TorchPostprocessor

QUALITY = ServerOptions.model_fields["jpeg_quality"].default
THREADS = ServerOptions.model_fields["postprocess_threads"].default


def measure(
    path: Postprocessor[Any], subsampling: JpegSubsampling, outputs: ReferenceOutputs, streams: int
) -> dict[str, float]:
    frames = list(zip(outputs.avatar_frames, outputs.faces, strict=True))

    def one(frame: tuple[int, np.ndarray]) -> Postprocessed:
        return path(frame[0], frame[1], "jpeg", QUALITY, subsampling)

    one(frames[0])  # warm-up: first-call allocations
    cpu, wall = time.process_time(), time.perf_counter()
    if streams == 1:
        done = [one(frame) for frame in frames]
    else:
        with ThreadPoolExecutor(THREADS) as pool:  # map queues every frame at once
            done = list(pool.map(one, frames))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    count = len(frames)
    return {
        "cpu_ms": cpu / count * 1e3,
        "wall_ms": wall / count * 1e3,
        "fps": count / wall,
        "kib": float(np.mean([len(item.data) for item in done])) / 1024,
        "composite_ms": float(np.mean([item.composite_s for item in done])) * 1e3,
        "encode_ms": float(np.mean([item.encode_s for item in done])) * 1e3,
    }


@click.command()
@click.option("--frames", "count", default=200, show_default=True, type=click.IntRange(10))
@click.option("--streams", default="1,16", show_default=True, help="Comma-separated counts.")
def main(count: int, streams: str) -> None:
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="lipsync-postprocess-") as scratch:
        outputs = reference_outputs(count, Path(scratch))
    numpy_path, torch_path = (
        NumpyPostprocessor(outputs.store),
        TorchPostprocessor(outputs.store, "cpu"),
    )
    paths: list[tuple[str, Postprocessor[Any], JpegSubsampling]] = [
        ("numpy, JPEG 4:4:4 (default)", numpy_path, "444"),
        ("numpy, JPEG 4:2:0", numpy_path, "420"),
        ("torch on CPU, JPEG 4:2:0 (TorchCodec)", torch_path, "420"),
        ("torch on CPU, JPEG 4:4:4 (host simplejpeg)", torch_path, "444"),
    ]
    counts = [int(part) for part in streams.split(",")]
    rows = [(name, n, measure(path, sub, outputs, n)) for name, path, sub in paths for n in counts]
    load = os.getloadavg()
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()}; torch "
          f"{torch.__version__} with {torch.get_num_threads()} threads; load average after the "
          f"run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    print(f"Command: `uv run python benchmarks/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}`")
    print(f"{count} frames of 1280x720, JPEG quality {QUALITY}, {THREADS} post-processing "
          "threads with several streams.\n")  # fmt: skip
    print("| path | streams | CPU ms/frame | wall ms/frame | frames/s | KiB/frame | "
          "composite ms | encode ms |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, n, row in rows:
        print(
            f"| {name} | {n} | {row['cpu_ms']:.1f} | {row['wall_ms']:.1f} | {row['fps']:.0f} | "
            f"{row['kib']:.1f} | {row['composite_ms']:.1f} | {row['encode_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
