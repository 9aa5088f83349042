"""``lipsync demo``: reference model + demo avatar -> a server process -> a stream -> a video."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import grpc
import numpy as np

from lipsync_core.reference.unet328 import build_unet328
from lipsync_server.audio import synthetic_features
from lipsync_server.avatar.demo import write_demo_avatar
from lipsync_server.avatar.format import MANIFEST_NAME
from lipsync_server.client import LipSyncStub, stream_frames
from lipsync_server.compositor import decode
from lipsync_server.process import ServerProcess

FPS = 25.0
FEATURE_DIM = 512


@dataclass
class StreamResult:
    frames: list[np.ndarray]
    server_latencies_ms: list[float]
    elapsed_s: float


def ensure_assets(cache: Path, echo: Callable[[str], None]) -> tuple[Path, Path]:
    """The reference model and the demo avatar under ``cache``, made once."""
    cache.mkdir(parents=True, exist_ok=True)
    model = cache / "unet328.onnx"
    if not model.is_file():
        echo(f"building the reference UNet-328 -> {model}")
        model.write_bytes(build_unet328(seed=0).SerializeToString())
    avatar = cache / "avatar"
    if not (avatar / MANIFEST_NAME).is_file():
        echo(f"drawing the demo avatar -> {avatar}")
        write_demo_avatar(avatar)
    return model, avatar


async def stream_clip(
    target: str, features: np.ndarray, echo: Callable[[str], None]
) -> StreamResult:
    frames: list[np.ndarray] = []
    latencies: list[float] = []
    total = features.shape[0]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = LipSyncStub(channel)
        started = time.perf_counter()
        async for frame in stream_frames(stub, features):
            frames.append(decode(frame.data, "jpeg", frame.width, frame.height))
            latencies.append(frame.timings.total_ms)
            done = len(frames)
            if done % 10 == 0 or done == total:
                rate = done / (time.perf_counter() - started)
                echo(f"  frame {done}/{total} ({rate:.1f} frames/s)")
        return StreamResult(frames, latencies, time.perf_counter() - started)


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()


def contact_sheet(
    frames: list[np.ndarray], columns: int = 4, rows: int = 3, width: int = 320
) -> np.ndarray:
    """Evenly spaced frames, downscaled, in a grid."""
    picks = np.linspace(0, len(frames) - 1, min(len(frames), columns * rows)).round().astype(int)
    height = round(frames[0].shape[0] * width / frames[0].shape[1])
    sheet = np.zeros((rows * height, columns * width, 3), np.uint8)
    for slot, index in enumerate(picks):
        row, column = divmod(slot, columns)
        thumb = cv2.resize(frames[index], (width, height), interpolation=cv2.INTER_AREA)
        sheet[row * height : (row + 1) * height, column * width : (column + 1) * width] = thumb
    return sheet


def run_demo(
    out_dir: Path, seconds: float, max_batch_size: int, port: int, echo: Callable[[str], None]
) -> None:
    model, avatar = ensure_assets(out_dir / "cache", echo)
    log_path = out_dir / "server.log"
    server = ServerProcess(
        model, avatar, log_path, grpc_port=port, metrics=False, max_batch_size=max_batch_size
    )
    echo(f"starting the server on {server.target} (log: {log_path})")
    with server:
        frames_wanted = max(1, round(seconds * FPS))
        echo(f"streaming {frames_wanted} frames ({seconds:g} s of synthetic audio at {FPS:g} fps)")
        features = synthetic_features(frames_wanted, FEATURE_DIM, seed=0)
        result = asyncio.run(stream_clip(server.target, features, echo))
    code = server.process.returncode
    video, sheet = out_dir / "demo.mp4", out_dir / "contact_sheet.png"
    write_video(video, result.frames, FPS)
    cv2.imwrite(str(sheet), contact_sheet(result.frames))
    p50, p99 = np.percentile(result.server_latencies_ms, [50, 99])
    echo(f"wrote {video} ({len(result.frames)} frames) and {sheet}")
    echo(
        f"{len(result.frames) / result.elapsed_s:.2f} frames/s end to end; server frame latency "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms; server stopped with exit code {code}"
    )
