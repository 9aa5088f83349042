"""Server stage times from Prometheus text, and latency summaries."""

from __future__ import annotations

import pytest
from lipsync_bench import latency, prometheus

pytestmark = pytest.mark.unit


def _exposition(infer_sum: float, infer_count: int, queue_sum: float, frames: int) -> str:
    return f"""# HELP lipsync_infer_seconds Time of one model call (one batch).
# TYPE lipsync_infer_seconds histogram
lipsync_infer_seconds_bucket{{le="+Inf"}} {infer_count}
lipsync_infer_seconds_count {infer_count}
lipsync_infer_seconds_sum {infer_sum}
# HELP lipsync_queue_seconds Time a frame waited in the batch queue.
# TYPE lipsync_queue_seconds histogram
lipsync_queue_seconds_bucket{{le="+Inf"}} {frames}
lipsync_queue_seconds_count {frames}
lipsync_queue_seconds_sum {queue_sum}
# HELP lipsync_frame_seconds Audio arriving to frame ready.
# TYPE lipsync_frame_seconds histogram
lipsync_frame_seconds_bucket{{le="+Inf"}} {frames}
lipsync_frame_seconds_count {frames}
lipsync_frame_seconds_sum {frames * 0.5}
# HELP lipsync_batch_size Frames per model batch.
# TYPE lipsync_batch_size histogram
lipsync_batch_size_bucket{{le="+Inf"}} {infer_count}
lipsync_batch_size_count {infer_count}
lipsync_batch_size_sum {frames}
# HELP other_seconds Not ours.
# TYPE other_seconds histogram
other_seconds_count 5
other_seconds_sum 1
"""


def test_stage_times_are_means_over_the_difference_in_milliseconds() -> None:
    before = prometheus.parse_histograms(_exposition(1.0, 2, 0.1, 4))
    after = prometheus.parse_histograms(_exposition(4.0, 5, 0.4, 10))
    assert set(after) == {
        "lipsync_infer_seconds",
        "lipsync_queue_seconds",
        "lipsync_frame_seconds",
        "lipsync_batch_size",
    }
    stages = prometheus.stage_times(before, after)
    assert stages.source == "metrics"
    assert stages.infer_ms == pytest.approx(1000.0)  # 3 s over 3 batches
    assert stages.queue_ms == pytest.approx(50.0)  # 0.3 s over 6 frames
    assert stages.total_ms == pytest.approx(500.0)
    assert stages.mean_batch_size == pytest.approx(2.0)  # 6 frames in 3 batches


def test_latency_summary_percentiles_histogram_and_cdf() -> None:
    samples = [float(v) for v in range(1, 101)]
    summary = latency.summarize(samples)
    assert summary is not None
    assert summary.count == 100
    assert summary.min_ms == 1
    assert summary.max_ms == 100
    assert summary.p50_ms == pytest.approx(50.5)
    assert summary.p99_ms == pytest.approx(99.01)
    assert sum(count for _, count in summary.histogram) == 100
    fractions = [fraction for _, fraction in summary.cdf]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert latency.summarize([]) is None
