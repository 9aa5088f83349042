"""An autoscaling run as a timeline: load, pods, nodes and served frames/s over time, as a
Markdown table and a PNG chart (``benchmarks/AUTOSCALING.md``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lipsync_bench.charts import _pyplot, _save
from lipsync_bench.markdown import table


@dataclass(frozen=True)
class Sample:
    """What the cluster looked like ``t_s`` seconds into the run."""

    t_s: float
    wanted_streams: int  # the load the clients asked for
    pods: int  # server pods of the product (any phase)
    ready_pods: int
    nodes: int  # GPU nodes of the product
    fps: float | None  # served frames/s (Prometheus rate), None before the first scrape
    event: str = ""  # what happened at this moment (load up, node added, ...)


def timeline_table(samples: Sequence[Sample]) -> str:
    """One row per sample that changed something (or names an event)."""
    rows = []
    previous: tuple[int, int, int, int] | None = None
    for sample in samples:
        state = (sample.wanted_streams, sample.pods, sample.ready_pods, sample.nodes)
        if state == previous and not sample.event:
            continue
        previous = state
        rows.append(
            [
                f"{sample.t_s:.0f}",
                str(sample.wanted_streams),
                f"{sample.ready_pods}/{sample.pods}",
                str(sample.nodes),
                "-" if sample.fps is None else f"{sample.fps:.1f}",
                sample.event,
            ]
        )
    return table(["t (s)", "wanted streams", "ready/pods", "GPU nodes", "frames/s", "event"], rows)


def timeline_chart(samples: Sequence[Sample], path: Path, title: str) -> str:
    """Load, pods and nodes (steps, left axis) and served frames/s (right axis) over time."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    t = [s.t_s for s in samples]
    ax.step(t, [s.wanted_streams for s in samples], where="post", label="wanted streams")
    ax.step(t, [s.ready_pods for s in samples], where="post", label="ready pods")
    ax.step(t, [s.nodes for s in samples], where="post", label="GPU nodes")
    ax.set_xlabel("seconds")
    ax.set_ylabel("count")
    ax.set_title(title)
    fps_axis = ax.twinx()
    fps_axis.plot(
        t, [s.fps if s.fps is not None else float("nan") for s in samples], "k:", label="frames/s"
    )
    fps_axis.set_ylabel("served frames/s")
    lines = ax.get_legend_handles_labels()
    more = fps_axis.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    return _save(fig, path)
