"""What each frame encoding costs: bytes, encode and decode time, and PSNR against the frame.

Frames: the demo avatar at 1280x720 with mouths from the reference UNet-328 (ONNX Runtime CPU,
synthetic audio features), composited as the server does. Encodings: JPEG 4:4:4 and 4:2:0 at
the server's default quality (simplejpeg, as the server), and H.264 (libx264 as the server runs it:
ultrafast, zerolatency, one thread) at 1.5 Mbit/s with an IDR every 2 s. Each encoder runs on one
thread over every frame in order; times are per frame. Prints a Markdown fragment.

    uv run python benchmarks/encodings.py --frames 100
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import cv2
import numpy as np
from lipsync_bench.machine import cpu_model
from lipsync_bench.reference_frames import reference_outputs

from lipsync_contract.server_options import ServerOptions
from lipsync_server.compositor import JpegSubsampling, composite, decode, encode
from lipsync_server.video import DEFAULT_BITRATE_KBPS, H264Decoder, H264Encoder

FPS = 25.0
T = TypeVar("T")


def rendered_frames(count: int, scratch: Path) -> list[np.ndarray]:
    """``count`` composited 1280x720 frames of the demo avatar with the reference UNet's mouths."""
    outputs = reference_outputs(count, scratch)
    return [
        composite(outputs.store, avatar_frame, face)
        for avatar_frame, face in zip(outputs.avatar_frames, outputs.faces, strict=True)
    ]


def timed(step: Callable[..., T], *args: Any) -> tuple[T, float]:
    started = time.perf_counter()
    result = step(*args)
    return result, time.perf_counter() - started


def measure_jpeg(
    frames: list[np.ndarray], quality: int, subsampling: JpegSubsampling
) -> dict[str, float]:
    sizes, encode_s, decode_s, psnr = [], 0.0, 0.0, []
    for frame in frames:
        data, spent = timed(encode, frame, "jpeg", quality, subsampling)
        picture, back = timed(decode, data, "jpeg", 1280, 720)
        sizes.append(len(data))
        encode_s, decode_s = encode_s + spent, decode_s + back
        psnr.append(cv2.PSNR(picture, frame))
    return summary(sizes, encode_s, decode_s, psnr, len(frames))


def measure_h264(frames: list[np.ndarray], kbps: int) -> dict[str, float]:
    encoder, decoder = H264Encoder(1280, 720, FPS, kbps), H264Decoder()
    sizes, encode_s, decode_s, psnr = [], 0.0, 0.0, []
    for frame in frames:
        unit, spent = timed(encoder.encode, frame)
        pictures, back = timed(decoder.decode, unit.data)
        sizes.append(len(unit.data))
        encode_s, decode_s = encode_s + spent, decode_s + back
        psnr.append(cv2.PSNR(pictures[0], frame))
    return summary(sizes, encode_s, decode_s, psnr, len(frames))


def summary(
    sizes: list[int], encode_s: float, decode_s: float, psnr: list[float], count: int
) -> dict[str, float]:
    return {
        "kib": float(np.mean(sizes)) / 1024,
        "mbits": float(np.mean(sizes)) * 8 * FPS / 1e6,
        "encode_ms": encode_s / count * 1e3,
        "decode_ms": decode_s / count * 1e3,
        "psnr_db": float(np.mean(psnr)),
        "psnr_min_db": float(np.min(psnr)),
    }


@click.command()
@click.option("--frames", "count", default=100, show_default=True, type=click.IntRange(10))
def main(count: int) -> None:
    cv2.setNumThreads(1)
    quality = ServerOptions.model_fields["jpeg_quality"].default
    with tempfile.TemporaryDirectory(prefix="lipsync-encodings-") as scratch:
        frames = rendered_frames(count, Path(scratch))
    rows = [
        (f"JPEG q{quality} 4:4:4 (default)", measure_jpeg(frames, quality, "444")),
        (f"JPEG q{quality} 4:2:0", measure_jpeg(frames, quality, "420")),
        (
            f"H.264 libx264 {DEFAULT_BITRATE_KBPS} kbit/s",
            measure_h264(frames, DEFAULT_BITRATE_KBPS),
        ),
    ]
    load = os.getloadavg()
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()}; load average "
          f"after the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    print(f"Command: `uv run python benchmarks/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}`")
    print(f"{count} frames of 1280x720, one thread per encoder.\n")
    print("| encoding | KiB/frame | Mbit/s at 25 fps | encode ms | decode ms | PSNR dB (min) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in rows:
        print(
            f"| {name} | {row['kib']:.1f} | {row['mbits']:.2f} | {row['encode_ms']:.1f} | "
            f"{row['decode_ms']:.1f} | {row['psnr_db']:.1f} ({row['psnr_min_db']:.1f}) |"
        )


if __name__ == "__main__":
    main()
