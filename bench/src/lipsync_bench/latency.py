"""Latency summaries: percentiles, a compact histogram and CDF (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lipsync_bench.result import LatencySummary

CDF_POINTS = 50
HISTOGRAM_BUCKETS = 20


def summarize(latencies_ms: Sequence[float]) -> LatencySummary | None:
    """Percentiles (linear interpolation), a ``HISTOGRAM_BUCKETS``-bucket histogram on
    log-spaced bounds and a ``CDF_POINTS``-point CDF; ``None`` for no samples."""
    if not latencies_ms:
        return None
    values = np.sort(np.asarray(latencies_ms, dtype=np.float64))
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return LatencySummary(
        count=len(values),
        mean_ms=float(values.mean()),
        min_ms=float(values[0]),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        max_ms=float(values[-1]),
        histogram=histogram(values),
        cdf=cdf(values),
    )


def histogram(sorted_ms: np.ndarray) -> list[tuple[float, int]]:
    """(upper bound ms, count) on log-spaced buckets from the minimum to the maximum."""
    low, high = float(sorted_ms[0]), float(sorted_ms[-1])
    if high <= low:
        return [(high, len(sorted_ms))]
    bounds = np.geomspace(max(low, 1e-3), high, HISTOGRAM_BUCKETS)
    indices = np.searchsorted(bounds, sorted_ms, side="left").clip(0, len(bounds) - 1)
    counts = np.bincount(indices, minlength=len(bounds))
    return [(round(float(b), 3), int(c)) for b, c in zip(bounds, counts, strict=True) if c]


def cdf(sorted_ms: np.ndarray) -> list[tuple[float, float]]:
    """(latency ms, fraction of samples at or below) at evenly spaced ranks, ending at 1.0."""
    n = len(sorted_ms)
    ranks = np.unique(np.linspace(1, n, min(n, CDF_POINTS)).round().astype(int))
    return [(round(float(sorted_ms[r - 1]), 3), round(r / n, 4)) for r in ranks]
