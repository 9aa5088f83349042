"""Per-stage server times from the server's Prometheus metrics: scrape before and after a run,
and turn the histogram differences into mean milliseconds per observation."""

from __future__ import annotations

import logging
import re
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from lipsync_bench.result import StageTimes

log = logging.getLogger(__name__)

PREFIX = "lipsync_"

# First match wins, in this order ("batch_size" before "batch" stages, "preprocess" before any
# "process").
_STAGE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("mean_batch_size", r"batch_size"),
    ("queue_ms", r"queue"),
    ("batch_assembly_ms", r"assembl"),
    ("preprocess_ms", r"pre_?process"),
    ("infer_ms", r"infer"),
    ("postprocess_ms", r"post_?process"),
    ("composite_ms", r"composit"),
    ("encode_ms", r"encod"),
    ("total_ms", r"total|^frame_seconds|frame_latency|request_duration"),
)


@dataclass(frozen=True)
class HistogramTotals:
    total: float
    count: float


Snapshot = dict[str, HistogramTotals]


def parse_histograms(text: str) -> Snapshot:
    """``{series name: totals}`` of every ``lipsync_`` histogram or summary; a labelled series
    is named ``family{label=value,...}``."""
    series: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX) or family.type not in ("histogram", "summary"):
            continue
        for sample in family.samples:
            suffix = sample.name[len(family.name) :]
            if suffix not in ("_sum", "_count"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            key = f"{family.name}{{{labels}}}" if labels else family.name
            series.setdefault(key, {})[suffix] = sample.value
    return {
        key: HistogramTotals(values.get("_sum", 0.0), values.get("_count", 0.0))
        for key, values in series.items()
    }


def sample_values(text: str) -> dict[str, float]:
    """Every unlabelled ``lipsync_`` sample by its name (``lipsync_frames_total``, ...)."""
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith(PREFIX)
        for sample in family.samples
        if not sample.labels
    }


def scrape_values(url: str, timeout_s: float = 10.0) -> dict[str, float]:
    """:func:`sample_values` of the metrics at ``url`` (raises OSError when unreachable)."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return sample_values(response.read().decode())


def scrape(url: str, timeout_s: float = 5.0) -> Snapshot | None:
    """The histograms at ``url``; ``None`` (logged) if the server's metrics cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return parse_histograms(response.read().decode())
    except OSError as exc:
        log.warning("cannot read metrics at %s: %s", url, exc)
        return None


def _mean(before: Snapshot, after: Snapshot, key: str) -> float | None:
    end = after[key]
    start = before.get(key, HistogramTotals(0.0, 0.0))
    count = end.count - start.count
    if count <= 0:
        return None
    mean = (end.total - start.total) / count
    return mean * 1000.0 if "seconds" in key else mean


def stage_times(before: Snapshot, after: Snapshot) -> StageTimes:
    """Mean per observation over the interval between two snapshots, matched to stages by name
    (seconds converted to milliseconds); unmatched series go to ``other``."""
    fields: dict[str, float] = {}
    other: dict[str, float] = {}
    for key in sorted(after):
        mean = _mean(before, after, key)
        if mean is None:
            continue
        short = key[len(PREFIX) :]
        field = next((f for f, pattern in _STAGE_PATTERNS if re.search(pattern, short)), None)
        if field is None or field in fields:
            other[short] = mean
        else:
            fields[field] = mean
    return StageTimes(source="metrics", other=other, **fields)
