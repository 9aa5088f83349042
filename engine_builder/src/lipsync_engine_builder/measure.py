"""Self-measurement: time the artifact at each batch size of its profile."""

from __future__ import annotations

import math
import statistics
import time

import numpy as np

from lipsync_contract.manifest import Throughput
from lipsync_core.backends.base import Backend
from lipsync_core.samples import random_inputs


def measure(backend: Backend, sizes: list[int], frames_per_size: int) -> list[Throughput]:
    """Median over runs after one warm-up run; at least two runs and ``frames_per_size`` frames."""
    rng = np.random.default_rng(2)
    results = []
    for size in sizes:
        inputs = random_inputs(backend.contract, size, rng)
        backend.infer(inputs)
        timings = []
        for _ in range(max(2, math.ceil(frames_per_size / size))):
            start = time.perf_counter()
            backend.infer(inputs)
            timings.append(time.perf_counter() - start)
        seconds_per_frame = statistics.median(timings) / size
        results.append(
            Throughput(
                batch=size,
                ms_per_frame=round(seconds_per_frame * 1000, 3),
                frames_per_second=round(1 / seconds_per_frame, 2),
            )
        )
    return results
