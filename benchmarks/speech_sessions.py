"""Speech-in sessions on one ``lipsync serve`` process: the audio encoder and the UNet together.

1. Bare model cost per frame: the reference "ave" encoder and the reference UNet-328 on ONNX
   Runtime CPU at a few batch sizes, no server (what a frame costs each model).
2. Live sessions: N = 1..16 clients each stream speech as 16 kHz PCM in 20 ms chunks paced in
   real time (``StreamGenerate``), all at once. Reported: frames/s of the process, audio-to-frame
   latency p50/p99 (from sending the chunk that completes a frame's look-ahead to receiving the
   frame), and per-frame encoder and UNet time from the server's metrics. Silence fast path off,
   so every frame runs both models.
3. Silence fast path: one clip of speech with pauses, streamed to a server with the path off,
   then twice to one with it on (the first pass fills the closed-mouth cache of the avatar
   frames it meets, the second finds them there); model calls counted by the server's metrics.
4. Latency budget: one live session of ``--budget-seconds`` with ``latency_budget_ms``, by 10 s
   of speech: frames rendered and skipped, latency p50/p99/max (``--budget-only`` runs just this).

Prints a Markdown fragment (machine, command, load average, tables).

    uv run python benchmarks/speech_sessions.py --sessions 1,2,4,8,16 --seconds 3
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
from lipsync_bench.machine import cpu_model
from lipsync_bench.prometheus import scrape_values

from lipsync_contract.modelio import encoder_preset, preset
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.reference.ave_encoder import build_ave_encoder
from lipsync_core.reference.unet328 import build_unet328
from lipsync_core.samples import random_inputs
from lipsync_server.avatar.demo import write_demo_avatar
from lipsync_server.client import LipSyncStub, stream_speech
from lipsync_server.process import ServerProcess
from lipsync_server.speech.frames import window_start
from lipsync_server.speech.tts import SpeechSynthesisError, speak, synthetic_speech

RATE = 16000
CHUNK_S = 0.02


@dataclass(frozen=True)
class Assets:
    unet: Path
    encoder: Path
    avatar: Path


def make_assets(root: Path) -> Assets:
    assets = Assets(root / "unet328.onnx", root / "ave.onnx", root / "avatar")
    assets.unet.write_bytes(build_unet328(seed=0).SerializeToString())
    assets.encoder.write_bytes(build_ave_encoder(seed=0).SerializeToString())
    write_demo_avatar(assets.avatar)
    return assets


def bare_ms_per_frame(assets: Assets, runs: int) -> list[str]:
    rows = []
    for label, path, contract, batches in (
        ("ave encoder", assets.encoder, encoder_preset("ave"), (1, 16)),
        ("UNet-328", assets.unet, preset("unet328-ave"), (1, 4)),
    ):
        for batch in batches:
            backend = load_backend(
                path, contract, BackendConfig(kind="onnxruntime-cpu", max_batch=batch)
            )
            inputs = random_inputs(contract, batch, np.random.default_rng(0))
            backend.infer(inputs)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                backend.infer(inputs)
                times.append((time.perf_counter() - started) * 1e3 / batch)
            backend.close()
            rows.append(f"| {label} | {batch} | {runs} | {statistics.median(times):.2f} |")
    return rows


def frame_ready_sample(frame: int, total: int) -> int:
    """The 16 kHz sample count after which the server can generate ``frame`` (its look-ahead:
    the mel window of frame + 7, plus half an STFT window), or the clip's end."""
    last_window = window_start(frame + 7, 80.0, 25.0) + 15
    return min(total, last_window * 200 + 400)


@dataclass(frozen=True)
class Arrival:
    """One frame of a live session as the client got it."""

    pts_seconds: float
    skipped: bool
    latency_ms: float  # from the chunk that completed its look-ahead to its arrival


async def one_session(target: str, samples: np.ndarray, budget_ms: int = 0) -> list[Arrival]:
    """The frames of one real-time session, with their audio-to-frame latencies."""
    sent: list[tuple[int, float]] = []
    arrivals = []
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(target) as channel:
        frames = stream_speech(
            LipSyncStub(channel),
            samples,
            RATE,
            chunk_seconds=CHUNK_S,
            real_time=True,
            timeout=3600,
            on_chunk=lambda end: sent.append((end, loop.time())),
            latency_budget_ms=budget_ms,
        )
        async for frame in frames:
            received = loop.time()
            need = frame_ready_sample(frame.index, samples.size)
            chunk_time = next(t for end, t in sent if end >= need)
            latency = (received - chunk_time) * 1e3
            arrivals.append(Arrival(frame.pts_seconds, frame.skipped, latency))
    return arrivals


@dataclass(frozen=True)
class Level:
    sessions: int
    frames: int
    seconds: float
    p50_ms: float
    p99_ms: float
    encoder_ms: float
    unet_ms: float
    encoder_batch: float
    unet_batch: float


def _moved(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def run_level(server: ServerProcess, sessions: int, clip: np.ndarray) -> Level:
    before = scrape_values(server.metrics_url)
    started = time.perf_counter()

    async def all_sessions() -> list[list[Arrival]]:
        return await asyncio.gather(*(one_session(server.target, clip) for _ in range(sessions)))

    latencies = [a.latency_ms for session in asyncio.run(all_sessions()) for a in session]
    seconds = time.perf_counter() - started
    after = scrape_values(server.metrics_url)

    def per_frame(seconds_metric: str, frames_metric: str) -> float:
        return 1e3 * _moved(before, after, seconds_metric) / _moved(before, after, frames_metric)

    def mean_batch(histogram: str) -> float:
        count = _moved(before, after, f"{histogram}_count")
        return _moved(before, after, f"{histogram}_sum") / count

    p50, p99 = np.percentile(latencies, [50, 99])
    return Level(
        sessions,
        len(latencies),
        seconds,
        float(p50),
        float(p99),
        per_frame("lipsync_encoder_seconds_sum", "lipsync_encoder_frames_total"),
        per_frame("lipsync_infer_seconds_sum", "lipsync_model_frames_total"),
        mean_batch("lipsync_encoder_batch_size"),
        mean_batch("lipsync_batch_size"),
    )


def speech_with_pauses() -> tuple[np.ndarray, str]:
    """eSpeak NG reading sentences with pauses between them (resampled to 16 kHz)."""
    from lipsync_server.speech.pcm import resample

    sentences = [
        "Good morning, and welcome.",
        "Today we look at speech that pauses.",
        "A pause is silence, and silence needs no model.",
    ]
    try:
        parts = []
        for sentence in sentences:
            spoken, rate = speak(sentence)
            parts += [resample(spoken, rate, RATE), np.zeros(int(1.5 * RATE), np.float32)]
        return np.concatenate(
            parts
        ), "eSpeak NG, three sentences, each followed by 1.5 s of silence"
    except SpeechSynthesisError:
        clip = synthetic_speech(9.0, RATE, seed=5, pause_every=3.0)
        return clip, "synthetic speech, a 0.4 s pause every 3 s"


def silence_row(server: ServerProcess, clip: np.ndarray, label: str) -> str:
    before = scrape_values(server.metrics_url)
    started = time.perf_counter()

    async def stream() -> int:
        async with grpc.aio.insecure_channel(server.target) as channel:
            frames = stream_speech(LipSyncStub(channel), clip, RATE, timeout=3600)
            return sum([1 async for _ in frames])

    frames = asyncio.run(stream())
    seconds = time.perf_counter() - started
    after = scrape_values(server.metrics_url)
    unet = _moved(before, after, "lipsync_model_frames_total")
    encoder = _moved(before, after, "lipsync_encoder_frames_total")
    silent = _moved(before, after, "lipsync_silent_frames_total")
    return (
        f"| {label} | {frames} | {silent:.0f} | {unet:.0f} | {encoder:.0f} | "
        f"{frames / seconds:.1f} |"
    )


def serve(assets: Assets, log: Path, *extra: str) -> ServerProcess:
    return ServerProcess(
        assets.unet,
        assets.avatar,
        log,
        audio_encoder=assets.encoder,
        max_batch_size=4,
        max_queue_size=256,
        log_level="WARNING",
        extra_args=list(extra),
    )


BUDGET_WINDOW_S = 10.0


def header(command: str, load_before: str, load_after: str) -> list[str]:
    return [
        f"Machine: {platform.machine()} VM, {os.cpu_count()} cores ({cpu_model()}), no GPU, "
        f"Python {platform.python_version()}",
        f"Command: `{command}`",
        f"Load average (1, 5, 15 min) before: {load_before}; after: {load_after}",
    ]


def budget_rows(server: ServerProcess, clip: np.ndarray, budget_ms: int) -> list[str]:
    """One live session with a latency budget, by 10 s of its speech: frames rendered and
    skipped, and the latency of every frame (markers included)."""
    arrivals = asyncio.run(one_session(server.target, clip, budget_ms))
    rows = []
    windows = int(np.ceil(clip.size / RATE / BUDGET_WINDOW_S))
    for window in range(windows):
        start = window * BUDGET_WINDOW_S
        part = [a for a in arrivals if start <= a.pts_seconds < start + BUDGET_WINDOW_S]
        rendered = sum(not a.skipped for a in part)
        p50, p99 = np.percentile([a.latency_ms for a in part], [50, 99])
        peak = max(a.latency_ms for a in part)
        span = min(BUDGET_WINDOW_S, clip.size / RATE - start)
        rows.append(
            f"| {start:.0f}-{start + span:.0f} s | {len(part)} | {rendered} | "
            f"{len(part) - rendered} | {rendered / span:.1f} | {p50:.0f} | {p99:.0f} | {peak:.0f} |"
        )
    return rows


def budget_section(assets: Assets, root: Path, seconds: float, budget_ms: int) -> list[str]:
    clip = synthetic_speech(seconds, RATE, seed=2, pause_every=0)
    with serve(assets, root / "budget.log", "--no-silence-fast-path") as server:
        run_level(server, 1, clip[: RATE // 2])  # warm-up, not reported
        rows = budget_rows(server, clip, budget_ms)
    return [
        f"Live session with a latency budget: one session streams {seconds:g} s of synthetic "
        f"speech in real time (as above) with `latency_budget_ms` {budget_ms}; a frame not "
        "ready in time comes back as a skip marker. Latency as above, of every frame, markers "
        "included.",
        "",
        "| speech | frames | rendered | skipped | rendered/s | latency p50 ms | latency p99 ms "
        "| latency max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ]


@click.command()
@click.option("--sessions", default="1,2,4,8,16", show_default=True)
@click.option("--seconds", default=3.0, show_default=True, help="Speech each session streams.")
@click.option("--bare-runs", default=16, show_default=True)
@click.option("--budget-ms", default=1000, show_default=True, help="Latency budget section.")
@click.option("--budget-seconds", default=60.0, show_default=True)
@click.option("--budget-only", is_flag=True, help="Run only the latency budget section.")
def main(
    *,
    sessions: str,
    seconds: float,
    bare_runs: int,
    budget_ms: int,
    budget_seconds: float,
    budget_only: bool,
) -> None:
    """Measure speech-in sessions and print a Markdown fragment."""
    levels = [int(part) for part in sessions.split(",")]
    load_before = " ".join(f"{value:.2f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="speech-bench-") as scratch:
        root = Path(scratch)
        assets = make_assets(root)
        budget = budget_section(assets, root, budget_seconds, budget_ms)
        if budget_only:
            command = (
                "uv run python benchmarks/speech_sessions.py --budget-only "
                f"--budget-ms {budget_ms} --budget-seconds {budget_seconds:g}"
            )
            load_after = " ".join(f"{value:.2f}" for value in os.getloadavg())
            click.echo("\n".join([*header(command, load_before, load_after), "", *budget]))
            return
        bare = bare_ms_per_frame(assets, bare_runs)
        clip = synthetic_speech(seconds, RATE, seed=1, pause_every=0)
        with serve(assets, root / "off.log", "--no-silence-fast-path") as server:
            run_level(server, 1, clip[: RATE // 2])  # warm-up, not reported
            results = [run_level(server, count, clip) for count in levels]
            paused, paused_label = speech_with_pauses()
            off_row = silence_row(server, paused, "off")
        with serve(assets, root / "on.log") as server:
            on_rows = [
                silence_row(server, paused, "on, first pass"),
                silence_row(server, paused, "on, second pass"),
            ]
    load_after = " ".join(f"{value:.2f}" for value in os.getloadavg())
    command = (
        f"uv run python benchmarks/speech_sessions.py --sessions {sessions} "
        f"--seconds {seconds:g} --bare-runs {bare_runs} --budget-ms {budget_ms} "
        f"--budget-seconds {budget_seconds:g}"
    )
    lines = [
        *header(command, load_before, load_after),
        "",
        "Bare models on ONNX Runtime CPU (no server): the reference ave encoder (2.81 M "
        "parameters) and the reference UNet-328.",
        "",
        "| model | batch | timed runs | ms/frame (median) |",
        "| --- | ---: | ---: | ---: |",
        *bare,
        "",
        f"Live sessions: each streams {seconds:g} s of synthetic speech as 16 kHz s16le PCM in "
        f"{CHUNK_S * 1000:.0f} ms chunks paced in real time, all sessions at once; "
        "`--max-batch-size 4`, silence fast path off. Latency: from sending the chunk that "
        "completes a frame's look-ahead (about 0.47 s of audio after the frame's start) to "
        "receiving the frame. Encoder and UNet ms per frame: model time per batch divided by "
        "its frames (server metrics).",
        "",
        "| sessions | frames | frames/s | latency p50 ms | latency p99 ms | encoder ms/frame "
        "| UNet ms/frame | encoder batch | UNet batch |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[
            f"| {r.sessions} | {r.frames} | {r.frames / r.seconds:.1f} | {r.p50_ms:.0f} | "
            f"{r.p99_ms:.0f} | {r.encoder_ms:.2f} | {r.unet_ms:.1f} | {r.encoder_batch:.1f} | "
            f"{r.unet_batch:.1f} |"
            for r in results
        ],
        "",
        f"Silence fast path: one session streams {paused.size / RATE:.1f} s of {paused_label} "
        "as fast as the server takes it: to a server with the path off, then twice to one with "
        "it on (the first pass renders the closed-mouth frame of each avatar frame it meets, "
        "once; the second finds them cached). A frame skips the UNet only when all 16 encoder "
        "vectors of its window (640 ms) are silent, so pauses under about 0.9 s save encoder "
        "calls only.",
        "",
        "| silence path | frames | silent frames | UNet frames | encoder windows | frames/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        off_row,
        *on_rows,
        "",
        *budget,
    ]
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
