"""One ``lipsync bench run``: ask the server what it serves, then for each concurrency level a
warm-up, a metrics scrape, the measured load (CPU/GPU sampled), another scrape, and the level's
result; the whole run becomes one ``BenchResult``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import grpc

from lipsync_bench import latency, prometheus
from lipsync_bench.demand import DemandExporter, parse_model
from lipsync_bench.loadgen import LevelPlan, Tally, get_info, open_channels, run_level
from lipsync_bench.machine import ResourceSampler, machine_info, versions
from lipsync_bench.result import (
    BenchResult,
    LevelResult,
    LoadConfig,
    ModelInfo,
    ResourceUsage,
    StageTimes,
)
from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server.channels import ChannelSecurity

log = logging.getLogger(__name__)

MAX_STREAMS = 256
MAX_DURATION_S = 3600.0
MAX_FRAMES = 1_000_000


class BenchError(ValueError):
    """Bad bench input; ``str()`` is a one-line reason."""


# RFC 2544's range for benchmarking, where the local test bed puts its nodes, pods and Services.
BENCHMARK_NETWORK = ipaddress.ip_network("198.18.0.0/15")


def _benchmark_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", maxsplit=1)[0])
    return ip.is_loopback or ip in BENCHMARK_NETWORK


def require_benchmark_address(host: str) -> None:
    """The load generator talks to this machine (loopback) and the benchmark range only: every
    address of ``host`` must be one of those."""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise BenchError(f"cannot resolve {host!r}: {exc}") from exc
    outside = sorted(a for a in addresses if not _benchmark_address(a))
    if outside:
        raise BenchError(
            f"{host!r} is neither loopback nor in the benchmark range {BENCHMARK_NETWORK} "
            f"({', '.join(outside)})"
        )


def split_target(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise BenchError(f"target {target!r} is not host:port")
    return host.strip("[]"), int(port)


@dataclass
class RunOptions:
    targets: list[str]
    streams: list[int]
    api: str = "stream"
    mode: str = "closed"
    rate_fps: float | None = None
    duration_s: float | None = None
    frames: int | None = None
    warmup_frames: int = 2
    frames_per_request: int = 1
    encoding: str = "jpeg"
    metrics_urls: list[str] = field(default_factory=list)
    server_pids: list[int] = field(default_factory=list)
    name: str = ""
    model_key: str = ""
    drain_timeout_s: float = 60.0
    retry_unavailable: bool = False
    notes: list[str] = field(default_factory=list)
    # Export lipsync_wanted_streams for this LipSyncModel (NAMESPACE/NAME) on this address.
    demand_model: str = ""
    demand_port: int | None = None
    demand_address: str = "127.0.0.1"
    connect_timeout_s: float = 30.0
    security: ChannelSecurity = field(default_factory=ChannelSecurity)

    def config(self) -> LoadConfig:
        return LoadConfig.model_validate(
            {
                "targets": self.targets,
                "api": self.api,
                "mode": self.mode,
                "streams": self.streams,
                "rate_fps": self.rate_fps,
                "duration_s": self.duration_s,
                "frames": self.frames,
                "warmup_frames": self.warmup_frames,
                "frames_per_request": self.frames_per_request,
                "encoding": self.encoding,
            }
        )

    def validate(self) -> LoadConfig:
        """Check bounds and addresses; the load config as recorded in the result."""
        if not self.targets:
            raise BenchError("give at least one --target host:port")
        for target in self.targets:
            require_benchmark_address(split_target(target)[0])
        for url in self.metrics_urls:
            require_benchmark_address(urlsplit(url).hostname or "")
        if not self.streams or min(self.streams) < 1 or max(self.streams) > MAX_STREAMS:
            raise BenchError(f"streams must be between 1 and {MAX_STREAMS}, got {self.streams}")
        if self.duration_s is not None and not 0 < self.duration_s <= MAX_DURATION_S:
            raise BenchError(f"--duration must be in (0, {MAX_DURATION_S:g}] seconds")
        if self.frames is not None and not 0 < self.frames <= MAX_FRAMES:
            raise BenchError(f"--frames must be in [1, {MAX_FRAMES}]")
        if (self.duration_s is None) == (self.frames is None):
            raise BenchError("give exactly one of --duration and --frames")
        if self.mode == "open" and not (self.rate_fps and self.rate_fps > 0):
            raise BenchError("--mode open needs --rate FRAMES_PER_SECOND")
        if (self.demand_port is None) != (not self.demand_model):
            raise BenchError("give --demand-port and --demand-model together")
        if self.demand_model:
            try:
                parse_model(self.demand_model)
            except ValueError as exc:
                raise BenchError(str(exc)) from None
        try:
            return self.config()
        except ValueError as exc:
            raise BenchError(str(exc).splitlines()[0]) from exc

    def plan(self, streams: int) -> LevelPlan:
        return LevelPlan(
            streams=streams,
            api=self.api,  # type: ignore[arg-type]  # validated by LoadConfig
            mode=self.mode,  # type: ignore[arg-type]
            rate_fps=self.rate_fps,
            duration_s=self.duration_s,
            frames=self.frames,
            frames_per_request=self.frames_per_request,
            encoding=self.encoding,
            drain_timeout_s=self.drain_timeout_s,
            retry_unavailable=self.retry_unavailable,
        )


def frame_stage_times(timings: Sequence[pb.FrameTimings]) -> StageTimes | None:
    """Mean of the per-frame timings the server returns with each frame."""
    if not timings:
        return None

    def mean(name: str) -> float:
        return statistics.fmean(getattr(t, name) for t in timings)

    return StageTimes(
        source="frame-timings",
        queue_ms=mean("queue_ms"),
        preprocess_ms=mean("preprocess_ms"),
        infer_ms=mean("infer_ms"),
        postprocess_ms=mean("postprocess_ms"),
        encode_ms=mean("encode_ms"),
        total_ms=mean("total_ms"),
        mean_batch_size=mean("batch_size"),
    )


def level_result(
    tally: Tally,
    streams: int,
    server_stages: StageTimes | None,
    resources: ResourceUsage | None,
) -> LevelResult:
    start, end = tally.first_send, tally.last_receive
    duration = end - start if start is not None and end is not None and end > start else 0.0
    per_stream = [tally.per_stream.get(i, 0) for i in range(streams)]
    rate = (lambda frames: frames / duration) if duration else (lambda frames: 0.0)
    return LevelResult(
        streams=streams,
        duration_s=duration,
        frames_sent=tally.sent,
        frames_received=tally.received,
        errors=dict(tally.errors),
        retried=dict(tally.retried),
        max_frame_gap_ms=tally.max_gap_ms if tally.last_frame_at else None,
        fps_total=rate(tally.received),
        fps_per_stream_mean=rate(statistics.fmean(per_stream)),
        fps_per_stream_min=rate(min(per_stream)),
        latency=latency.summarize(tally.latencies_ms),
        stages=frame_stage_times(tally.timings),
        server_stages=server_stages,
        resources=resources,
    )


def _model_info(info: pb.GetInfoResponse, key: str) -> ModelInfo:
    return ModelInfo(
        key=key,
        name=info.model,
        backend=info.backend,
        provider=info.provider,
        precision=info.precision,
        device=info.device,
        max_batch_size=info.max_batch_size,
        max_queue_delay_us=info.max_queue_delay_microseconds,
        instances=info.instances,
    )


def _scrape_all(urls: Sequence[str]) -> list[prometheus.Snapshot] | None:
    snapshots = [prometheus.scrape(url) for url in urls]
    if not urls or any(s is None for s in snapshots):
        return None
    return [s for s in snapshots if s is not None]


def _merge(snapshots: list[prometheus.Snapshot]) -> prometheus.Snapshot:
    merged: prometheus.Snapshot = {}
    for snapshot in snapshots:
        for key, totals in snapshot.items():
            old = merged.get(key, prometheus.HistogramTotals(0.0, 0.0))
            merged[key] = prometheus.HistogramTotals(
                old.total + totals.total, old.count + totals.count
            )
    return merged


async def run_bench(
    options: RunOptions,
    command: list[str],
    on_level: Callable[[LevelPlan], Callable[[int], None]] = lambda plan: lambda n: None,
) -> BenchResult:
    """Every level of ``options.streams``, in order; ``on_level`` returns a per-frame progress
    callback for each measured level."""
    config = options.validate()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    machine = machine_info()
    channels = open_channels(options.targets, options.security)
    notes = list(options.notes)
    with ExitStack() as stack:
        demand = None
        if options.demand_port is not None:
            demand = stack.enter_context(
                DemandExporter(options.demand_model, options.demand_port, options.demand_address)
            )
            demand.want(options.streams[0])
        try:
            info, waited = await _first_answer(channels[0], options.connect_timeout_s)
            notes.append(f"first answer from the server after {waited:.1f} s")
            levels = await _run_levels(options, channels, list(info.audio.shape), on_level, demand)
        finally:
            for channel in channels:
                await channel.close(None)
    return BenchResult(
        name=options.name or f"{info.backend} {info.precision}",
        created=started,
        command=command,
        machine=machine,
        versions=versions(info.server_version, info.backend_version),
        model=_model_info(info, options.model_key),
        config=config,
        levels=levels,
        notes=notes,
    )


async def _first_answer(
    channel: grpc.aio.Channel, timeout_s: float
) -> tuple[pb.GetInfoResponse, float]:
    """GetInfo, waiting for a server (a model at zero wakes meanwhile); seconds it took."""
    start = time.monotonic()
    try:
        info = await get_info(channel, timeout_s)
    except grpc.aio.AioRpcError as exc:
        raise BenchError(
            f"no server answered within {timeout_s:g} s ({exc.code().name}); "
            "raise --connect-timeout for a model scaled to zero"
        ) from None
    return info, time.monotonic() - start


async def _run_levels(
    options: RunOptions,
    channels: list[grpc.aio.Channel],
    audio_shape: list[int],
    on_level: Callable[[LevelPlan], Callable[[int], None]],
    demand: DemandExporter | None,
) -> list[LevelResult]:
    levels = []
    for streams in options.streams:
        if demand is not None:
            demand.want(streams)
        plan = options.plan(streams)
        if options.warmup_frames:
            warmup = replace(
                plan, mode="closed", duration_s=None, frames=streams * options.warmup_frames
            )
            await run_level(channels, warmup, audio_shape)
        before = _scrape_all(options.metrics_urls)
        with ResourceSampler(options.server_pids) as sampler:
            tally = await run_level(channels, plan, audio_shape, on_level(plan))
        after = _scrape_all(options.metrics_urls)
        server_stages = (
            prometheus.stage_times(_merge(before), _merge(after)) if before and after else None
        )
        level = level_result(tally, streams, server_stages, sampler.usage)
        log.info(
            "%d streams: %d frames, %.2f frames/s, errors %s",
            streams,
            level.frames_received,
            level.fps_total,
            level.errors or "none",
        )
        levels.append(level)
    return levels
