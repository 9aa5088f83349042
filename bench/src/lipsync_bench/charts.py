"""PNG charts for ``lipsync compare`` (matplotlib, Agg: no display needed). Small files: the
report directory is committed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lipsync_bench.markdown import profiled_levels, stage_values, unaccounted_ms
from lipsync_bench.result import BenchResult
from lipsync_bench.summary import SummaryRow

_DPI = 80
_STAGE_ORDER = (
    "queue",
    "batch assembly",
    "pre-process",
    "infer (batch)",
    "post-process",
    "composite",
    "encode",
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    _pyplot().close(fig)
    return path.name


def fps_and_p99(rows: list[SummaryRow], path: Path) -> str:
    plt = _pyplot()
    fig, (ax_fps, ax_p99) = plt.subplots(1, 2, figsize=(8, 3.2))
    names = [r.name for r in rows]
    ax_fps.bar(names, [r.fps_best for r in rows], color="tab:blue")
    ax_fps.set_title("FPS, one process, best concurrency")
    ax_fps.set_ylabel("frames/s")
    ax_p99.bar(names, [r.p99_best_ms or 0.0 for r in rows], color="tab:orange")
    ax_p99.set_title("p99 latency at that concurrency")
    ax_p99.set_ylabel("ms")
    for ax in (ax_fps, ax_p99):
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    return _save(fig, path)


def latency_cdf(results: list[BenchResult], path: Path) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for result in results:
        best = result.best_level()
        if best is None or best.latency is None or not best.latency.cdf:
            continue
        xs, ys = zip(*best.latency.cdf, strict=True)
        ax.plot(xs, ys, label=f"{result.name} ({best.streams} streams)")
    ax.set_xlabel("latency ms (request sent to frame received)")
    ax.set_ylabel("fraction of frames")
    ax.set_title("Latency CDF at best concurrency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def stage_bars(results: list[BenchResult], path: Path) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    names: list[str] = []
    per_stage: dict[str, list[float]] = {stage: [] for stage in (*_STAGE_ORDER, "unaccounted")}
    for result in results:
        for level in profiled_levels(result):
            assert level.stages is not None
            names.append(f"{result.name}\n{level.streams} streams")
            values = stage_values(level.stages)
            values["unaccounted"] = unaccounted_ms(level.stages) or 0.0
            for stage, heights in per_stage.items():
                heights.append(values.get(stage, 0.0))
    bottom = [0.0] * len(names)
    for stage, heights in per_stage.items():
        if any(heights):
            ax.bar(names, heights, bottom=bottom, label=stage)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_yscale("log")
    ax.set_ylabel("mean ms per frame (log)")
    ax.set_title("Server stage times: one stream and best concurrency")
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7)
    return _save(fig, path)


def scaling(results: list[BenchResult], path: Path) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for result in results:
        levels = sorted(result.levels, key=lambda level: level.streams)
        ax.plot(
            [lv.streams for lv in levels],
            [lv.fps_total for lv in levels],
            marker="o",
            label=result.name,
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("frames/s")
    ax.set_title("Throughput by concurrency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def write_charts(results: list[BenchResult], rows: list[SummaryRow], out: Path) -> list[str]:
    """Write every chart into ``out``; returns the file names in report order."""
    out.mkdir(parents=True, exist_ok=True)
    return [
        fps_and_p99(rows, out / "fps_p99.png"),
        scaling(results, out / "scaling.png"),
        latency_cdf(results, out / "latency_cdf.png"),
        stage_bars(results, out / "stages.png"),
    ]
