"""The bench result file: one JSON document per run of ``lipsync bench run``.

It records where the numbers come from (machine, versions, model, command, load configuration)
next to the numbers themselves, one ``LevelResult`` per concurrency level of a streams sweep.
``lipsync compare`` reads nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1

Mode = Literal["closed", "open"]
Api = Literal["stream", "unary"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GpuInfo(_Model):
    index: int
    name: str
    memory_total_mib: float
    driver_version: str = ""


class MachineInfo(_Model):
    cpu_model: str
    cpu_cores_logical: int
    cpu_cores_physical: int | None
    memory_gib: float
    platform: str
    load_average_1m: float | None = Field(
        None, description="Load average when the run started: other work sharing the machine."
    )
    gpus: list[GpuInfo] = Field(default_factory=list)


class Versions(_Model):
    python: str
    onnxruntime: str
    lipsync: str = Field(description="Version of the lipsync-bench distribution.")
    server: str = Field("", description="The server's reported version.")
    backend: str = Field("", description="The backend runtime the server reports.")
    grpcio: str = ""


class ModelInfo(_Model):
    """What the server says it serves (``GetInfo``), plus the engine key where known."""

    key: str = ""
    name: str = ""
    backend: str
    provider: str = ""
    precision: str
    device: str = ""
    max_batch_size: int = 0
    max_queue_delay_us: int = 0
    instances: int = 0


class LoadConfig(_Model):
    targets: list[str] = Field(min_length=1)
    api: Api = "stream"
    mode: Mode = "closed"
    streams: list[int] = Field(min_length=1, description="Concurrency levels, one run each.")
    rate_fps: float | None = Field(None, description="Open loop: total arrival rate, frames/s.")
    duration_s: float | None = Field(None, description="Measured time per level.")
    frames: int | None = Field(None, description="Measured frames per level (all streams).")
    warmup_frames: int = Field(0, ge=0, description="Per stream, before measuring, not counted.")
    frames_per_request: int = Field(1, ge=1, description="Unary: frames per Generate call.")
    encoding: str = "jpeg"

    @model_validator(mode="after")
    def _check_bounds(self) -> LoadConfig:
        if self.duration_s is None and self.frames is None:
            raise ValueError("a level needs a duration or a frame count")
        if self.mode == "open" and not self.rate_fps:
            raise ValueError("open loop needs a rate")
        return self


class LatencySummary(_Model):
    """Client-side latency of a frame: its request sent to its frame received, milliseconds."""

    count: int = Field(ge=0)
    mean_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    histogram: list[tuple[float, int]] = Field(
        default_factory=list, description="(bucket upper bound ms, frames in bucket)."
    )
    cdf: list[tuple[float, float]] = Field(
        default_factory=list, description="(latency ms, fraction of frames at or below)."
    )


class StageTimes(_Model):
    """Mean milliseconds per frame in each server stage (absent: the source does not report it).

    ``infer_ms`` is the model call of the frame's whole batch, so with batching
    ``infer_ms / mean_batch_size`` is the model time a frame costs.
    """

    source: Literal["frame-timings", "metrics"]
    queue_ms: float | None = None
    batch_assembly_ms: float | None = None
    preprocess_ms: float | None = None
    infer_ms: float | None = None
    postprocess_ms: float | None = None
    composite_ms: float | None = None
    encode_ms: float | None = None
    total_ms: float | None = None
    mean_batch_size: float | None = None
    other: dict[str, float] = Field(
        default_factory=dict, description="Further per-frame means the server's metrics expose."
    )


class ResourceUsage(_Model):
    cpu_percent_system: float = Field(description="All cores, 100 = every core busy.")
    cpu_percent_client: float = Field(description="The load generator process, 100 = one core.")
    cpu_percent_server: float | None = Field(
        None, description="The server processes when their pids are known, 100 = one core."
    )
    gpu_util_percent: float | None = None
    gpu_memory_used_mib: float | None = None


class LevelResult(_Model):
    streams: int = Field(ge=1)
    duration_s: float = Field(ge=0, description="From the first measured send to the last reply.")
    frames_sent: int = Field(ge=0)
    frames_received: int = Field(ge=0)
    errors: dict[str, int] = Field(
        default_factory=dict, description="Frames lost, by gRPC status code name."
    )
    retried: dict[str, int] = Field(
        default_factory=dict,
        description="Frames asked again on a new call after one failed, by status code name.",
    )
    max_frame_gap_ms: float | None = Field(
        None, description="Largest time between two frames of one stream."
    )
    fps_total: float
    fps_per_stream_mean: float
    fps_per_stream_min: float
    latency: LatencySummary | None
    stages: StageTimes | None = None
    server_stages: StageTimes | None = None
    resources: ResourceUsage | None = None

    @model_validator(mode="after")
    def _check_counts(self) -> LevelResult:
        lost = sum(self.errors.values())
        if self.frames_sent != self.frames_received + lost:
            raise ValueError(
                f"frames sent ({self.frames_sent}) != received ({self.frames_received})"
                f" + errors ({lost})"
            )
        return self


class BareResult(_Model):
    """The backend alone, in-process, no gRPC: the ceiling the served figures are held against
    (timed while no server runs, half before the served load and half after)."""

    batch_size: int = Field(ge=1)
    iterations: int = Field(ge=1)
    infer_ms_mean: float = Field(description="One batch.")
    infer_ms_p50: float
    infer_ms_p99: float
    fps: float = Field(description="batch_size / mean batch time.")


class BenchResult(_Model):
    schema_version: int = SCHEMA_VERSION
    name: str = Field(description="Label in reports, e.g. 'onnxruntime-cpu fp32'.")
    created: str = Field(description="ISO 8601 time the run started (UTC).")
    command: list[str]
    machine: MachineInfo
    versions: Versions
    model: ModelInfo
    config: LoadConfig
    levels: list[LevelResult] = Field(default_factory=list)
    bare: BareResult | None = None
    notes: list[str] = Field(default_factory=list)

    def best_level(self) -> LevelResult | None:
        """The level with the highest total frames/s (the 'best measured concurrency')."""
        return max(self.levels, key=lambda level: level.fps_total, default=None)

    def level(self, streams: int) -> LevelResult | None:
        return next((level for level in self.levels if level.streams == streams), None)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> BenchResult:
        return cls.model_validate_json(path.read_text())
