"""Prometheus metrics (``lipsync_`` prefix), in a registry owned by one server."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_STAGE_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ServerMetrics:
    """Every metric the server exports; names are listed in server/CONFIG.md."""

    def __init__(
        self,
        max_batch_size: int,
        queue_depth: Callable[[], int],
        encoder_max_batch_size: int = 32,
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lipsync_requests",
            "RPCs finished, by method and gRPC status code.",
            ["method", "code"],
            registry=r,
        )
        self.frames = Counter("lipsync_frames", "Frames generated and sent.", registry=r)
        self.batch_size = Histogram(
            "lipsync_batch_size",
            "Frames per model batch.",
            buckets=tuple(range(1, max_batch_size + 1)),
            registry=r,
        )
        self.queue_seconds = Histogram(
            "lipsync_queue_seconds",
            "Time a frame waited in the batch queue.",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.preprocess_seconds = Histogram(
            "lipsync_preprocess_seconds",
            "Time to assemble one batch's inputs.",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.infer_seconds = Histogram(
            "lipsync_infer_seconds",
            "Time of one model call (one batch).",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.postprocess_seconds = Histogram(
            "lipsync_postprocess_seconds",
            "Time to composite one frame.",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.encode_seconds = Histogram(
            "lipsync_encode_seconds",
            "Time to encode one frame.",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.frame_seconds = Histogram(
            "lipsync_frame_seconds",
            "Time from a frame's audio arriving to its frame being ready.",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.model_frames = Counter(
            "lipsync_model_frames", "Frames that ran through the lip-sync model.", registry=r
        )
        self.encoder_frames = Counter(
            "lipsync_encoder_frames", "Mel windows that ran through the audio encoder.", registry=r
        )
        self.encoder_batch_size = Histogram(
            "lipsync_encoder_batch_size",
            "Mel windows per audio encoder batch.",
            buckets=tuple(sorted({1, 2, 4, 8, 16, 32, 64, encoder_max_batch_size})),
            registry=r,
        )
        self.encoder_seconds = Histogram(
            "lipsync_encoder_seconds",
            "Time of one audio encoder call (one batch).",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.encoder_skipped = Counter(
            "lipsync_encoder_skipped_frames",
            "Silent mel windows that skipped the audio encoder.",
            registry=r,
        )
        self.silent_frames = Counter(
            "lipsync_silent_frames",
            "Frames served from the cached closed-mouth render (both models skipped).",
            registry=r,
        )
        self.frames_skipped = Counter(
            "lipsync_frames_skipped",
            "Frames of live sessions not rendered: their latency budget ran out first.",
            registry=r,
        )
        self.silent_renders = Counter(
            "lipsync_silent_renders",
            "Closed-mouth renders made for the cache (one per avatar frame used).",
            registry=r,
        )
        self.active_streams = Gauge(
            "lipsync_active_streams", "Open StreamGenerate calls.", registry=r
        )
        self.queue_depth = Gauge(
            "lipsync_queue_depth", "Frames waiting in the batch queue.", registry=r
        )
        self.queue_depth.set_function(lambda: float(queue_depth()))
