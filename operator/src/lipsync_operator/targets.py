"""Per-pod load targets of an autoscaled product: the spec's, or the builder's measurement.

The builder times the engine on one GPU (best frames/s over batch sizes). A pod's share of that
GPU is 1 with ``exclusive`` sharing and 1/replicasPerGPU with timeSlicing or MPS; the target
keeps headroom below it so latency holds while the autoscaler catches up.
"""

from __future__ import annotations

import math

from lipsync_contract.api import Autoscaling

HEADROOM = 0.8
# When the engine carries no measurement (an engine published before builders measured).
FALLBACK_FPS = 30.0
# Video frames per second of one stream (25 Hz audio-feature windows, one frame each).
STREAM_FPS = 25.0


def target_fps(
    policy: Autoscaling, product: str, measured_fps: float | None, pods_per_gpu: int
) -> float:
    """Served frames/s per pod to aim for: the product's override, the model's, or measured."""
    chosen = policy.product_target_fps.get(product, policy.target_fps)
    if chosen is not None:
        return chosen
    if measured_fps:
        return round(HEADROOM * measured_fps / max(1, pods_per_gpu), 2)
    return FALLBACK_FPS


def streams_per_pod(fps: float) -> int:
    """Streams a pod serving ``fps`` frames/s holds at the target (at least one)."""
    return max(1, math.floor(fps / STREAM_FPS))
