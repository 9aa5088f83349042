"""``lipsync demo``: reference models + demo avatar -> a server process -> speech streamed as
PCM -> a video with its sound track."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lipsync_contract.errors import LipSyncError
from lipsync_core.reference.ave_encoder import build_ave_encoder
from lipsync_core.reference.unet328 import build_unet328
from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server.avatar.demo import write_demo_avatar
from lipsync_server.avatar.format import MANIFEST_NAME
from lipsync_server.channels import ChannelSecurity, open_channel
from lipsync_server.client import LipSyncStub, stream_speech
from lipsync_server.compositor import decode
from lipsync_server.mux import probe, write_mp4
from lipsync_server.process import ServerProcess
from lipsync_server.speech.pcm import read_audio_file
from lipsync_server.speech.tts import SpeechSynthesisError, speak, synthetic_speech

FPS = 25.0
SENTENCE = (
    "Hello! I am a lip sync demo. The server hears this sentence as raw audio, "
    "turns it into mel frames, encodes them, and renders my face, frame by frame."
)
CHUNK_SECONDS = 0.02


@dataclass
class Assets:
    model: Path
    encoder: Path
    avatar: Path


@dataclass
class StreamResult:
    frames: list[np.ndarray]
    server_latencies_ms: list[float]
    silent: int
    elapsed_s: float


def ensure_assets(cache: Path, echo: Callable[[str], None]) -> Assets:
    """The reference model, the reference audio encoder and the demo avatar, made once."""
    cache.mkdir(parents=True, exist_ok=True)
    model, encoder, avatar = cache / "unet328.onnx", cache / "ave.onnx", cache / "avatar"
    if not model.is_file():
        echo(f"building the reference UNet-328 -> {model}")
        model.write_bytes(build_unet328(seed=0).SerializeToString())
    if not encoder.is_file():
        echo(f"building the reference ave audio encoder -> {encoder}")
        encoder.write_bytes(build_ave_encoder(seed=0).SerializeToString())
    if not (avatar / MANIFEST_NAME).is_file():
        echo(f"drawing the demo avatar -> {avatar}")
        write_demo_avatar(avatar)
    return Assets(model, encoder, avatar)


def demo_speech(
    audio: Path | None, seconds: float | None, echo: Callable[[str], None]
) -> tuple[np.ndarray, int]:
    """The user's file, else the sentence spoken by eSpeak NG, else a synthetic signal."""
    if audio is not None:
        samples, rate = read_audio_file(audio)
        echo(f"speech: {audio} ({samples.size / rate:.1f} s at {rate} Hz)")
    else:
        try:
            samples, rate = speak(SENTENCE)
            echo(f'speech: eSpeak NG says "{SENTENCE}" ({samples.size / rate:.1f} s at {rate} Hz)')
        except SpeechSynthesisError as exc:
            rate = 16000
            samples = synthetic_speech(seconds or 10.0, rate)
            echo(f"speech: {exc}; using a synthetic speech-like signal instead")
    if seconds is not None:
        samples = samples[: round(seconds * rate)]
    return samples, rate


async def stream_clip(
    target: str,
    samples: np.ndarray,
    rate: int,
    echo: Callable[[str], None],
    security: ChannelSecurity | None = None,
) -> StreamResult:
    frames: list[np.ndarray] = []
    latencies: list[float] = []
    silent = 0
    total = int(np.ceil(samples.size * FPS / rate))
    async with open_channel(target, security) as channel:
        stub = LipSyncStub(channel)
        # A unary call first: its refusal (TLS, token) reads clearly, a stream's may not.
        info = await stub.GetInfo(pb.GetInfoRequest(), timeout=30)
        if not info.audio_input.pcm:
            raise LipSyncError(f"{target}: the server takes no speech: start it --audio-encoder")
        avatar = info.avatar
        echo(
            f"server: {info.model} on {info.backend} ({info.device}), avatar {avatar.name} "
            f"{avatar.width}x{avatar.height}"
        )
        echo(f"streaming {samples.size / rate:.1f} s of PCM in {CHUNK_SECONDS * 1e3:.0f} ms chunks")
        started = time.perf_counter()
        async for frame in stream_speech(stub, samples, rate, chunk_seconds=CHUNK_SECONDS):
            frames.append(decode(frame.data, "jpeg", frame.width, frame.height))
            latencies.append(frame.timings.total_ms)
            silent += frame.silent
            done = len(frames)
            if done % 25 == 0 or done == total:
                rate_now = done / (time.perf_counter() - started)
                echo(f"  frame {done}/{total} ({rate_now:.1f} frames/s)")
        return StreamResult(frames, latencies, silent, time.perf_counter() - started)


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
    out_dir: Path,
    *,
    seconds: float | None,
    max_batch_size: int,
    port: int,
    echo: Callable[[str], None],
    audio: Path | None = None,
    target: str | None = None,
    security: ChannelSecurity | None = None,
) -> None:
    """Speech -> a server -> ``out_dir``/demo.mp4. The demo's own server on loopback unless
    ``target`` names a running one (its model and avatar then; ``security``: how to reach it)."""
    samples, rate = demo_speech(audio, seconds, echo)
    if target is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        echo(f"using the server at {target}")
        result = asyncio.run(stream_clip(target, samples, rate, echo, security))
        ending = f"server at {target}"
    else:
        assets = ensure_assets(out_dir / "cache", echo)
        log_path = out_dir / "server.log"
        server = ServerProcess(
            assets.model,
            assets.avatar,
            log_path,
            grpc_port=port,
            metrics=False,
            max_batch_size=max_batch_size,
            audio_encoder=assets.encoder,
        )
        echo(f"starting the server on {server.target} (log: {log_path})")
        with server:
            result = asyncio.run(stream_clip(server.target, samples, rate, echo))
        ending = f"server stopped with exit code {server.process.returncode}"
    video, sheet = out_dir / "demo.mp4", out_dir / "contact_sheet.png"
    write_mp4(video, result.frames, FPS, samples, rate)
    cv2.imwrite(str(sheet), contact_sheet(result.frames))
    streams = ", ".join(f"{s.kind} {s.codec} {s.duration_s:.2f} s" for s in probe(video))
    p50, p99 = np.percentile(result.server_latencies_ms, [50, 99])
    echo(f"wrote {video} ({len(result.frames)} frames; {streams}) and {sheet}")
    echo(
        f"{len(result.frames) / result.elapsed_s:.2f} frames/s end to end "
        f"({result.silent} silent frames from the cache); server frame latency "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms; {ending}"
    )
