"""The summary table of ``lipsync compare``: one row per bench result, derived from measurements."""

from __future__ import annotations

from dataclasses import dataclass, field

from lipsync_bench import costs
from lipsync_bench.result import BenchResult, LevelResult


@dataclass(frozen=True)
class CostOptions:
    devices: int = costs.DEFAULT_DEVICES
    usd_per_device_hour: float = costs.DEFAULT_USD_PER_DEVICE_HOUR
    hours_per_month: float = costs.HOURS_PER_MONTH
    usd_per_effort_hour: float = 100.0
    default_effort_hours: float = 4.0
    effort_hours: dict[str, float] = field(default_factory=dict)

    def effort_for(self, name: str, is_baseline: bool) -> float:
        if name in self.effort_hours:
            return self.effort_hours[name]
        return 0.0 if is_baseline else self.default_effort_hours


@dataclass(frozen=True)
class SummaryRow:
    name: str
    is_baseline: bool
    inference_ms: float | None
    total_ms: float | None
    fps_one_stream: float | None
    fps_best: float
    best_streams: int
    p99_best_ms: float | None
    fps_devices: float
    speedup: float
    cost_per_1000_fps_hours: float
    monthly_cost: float
    monthly_savings: float
    effort_hours: float
    break_even_hours: float
    bare_fps: float | None
    served_over_bare: float | None


def single_stream_level(result: BenchResult) -> LevelResult | None:
    """The one-stream level, else the lowest concurrency measured."""
    return result.level(1) or min(result.levels, key=lambda lv: lv.streams, default=None)


def inference_ms_per_frame(result: BenchResult) -> float | None:
    """Model time of one frame at one stream: the server's infer stage divided by its batch size,
    else the bare backend's batch time divided by its batch size."""
    level = single_stream_level(result)
    stages = level.stages if level else None
    if stages and stages.infer_ms is not None:
        return stages.infer_ms / max(stages.mean_batch_size or 1.0, 1.0)
    if result.bare:
        return result.bare.infer_ms_mean / result.bare.batch_size
    return None


def _best(result: BenchResult) -> LevelResult:
    best = result.best_level()
    if best is None or best.fps_total <= 0:
        raise ValueError(f"{result.name}: no level with received frames; nothing to compare")
    return best


def summary_rows(
    results: list[BenchResult], baseline: str | None, options: CostOptions
) -> list[SummaryRow]:
    """One row per result; ``baseline`` names the result speedups and savings are relative to
    (default: the first)."""
    if not results:
        raise ValueError("no results to compare")
    names = [r.name for r in results]
    if len(set(names)) != len(names):
        raise ValueError(f"result names must be unique, got {names}")
    base_name = baseline or names[0]
    if base_name not in names:
        raise ValueError(f"baseline {base_name!r} is not among the results ({', '.join(names)})")
    base_fps = _best(results[names.index(base_name)]).fps_total
    rows = []
    for result in results:
        best = _best(result)
        fps = best.fps_total
        is_base = result.name == base_name
        one = single_stream_level(result)
        effort = options.effort_for(result.name, is_base)
        bare_fps = result.bare.fps if result.bare else None
        rows.append(
            SummaryRow(
                name=result.name,
                is_baseline=is_base,
                inference_ms=inference_ms_per_frame(result),
                total_ms=one.latency.mean_ms if one and one.latency else None,
                fps_one_stream=one.fps_total if one and one.streams == 1 else None,
                fps_best=fps,
                best_streams=best.streams,
                p99_best_ms=best.latency.p99_ms if best.latency else None,
                fps_devices=costs.fps_for_devices(fps, options.devices),
                speedup=costs.speedup(fps, base_fps),
                cost_per_1000_fps_hours=costs.cost_per_1000_fps_hours(
                    options.usd_per_device_hour, fps
                ),
                monthly_cost=costs.monthly_cost(
                    fps,
                    base_fps,
                    options.devices,
                    options.usd_per_device_hour,
                    options.hours_per_month,
                ),
                monthly_savings=costs.monthly_savings(
                    fps,
                    base_fps,
                    options.devices,
                    options.usd_per_device_hour,
                    options.hours_per_month,
                ),
                effort_hours=effort,
                break_even_hours=costs.break_even_hours(
                    effort_hours=effort,
                    usd_per_effort_hour=options.usd_per_effort_hour,
                    fps=fps,
                    baseline_fps=base_fps,
                    devices=options.devices,
                    usd_per_device_hour=options.usd_per_device_hour,
                ),
                bare_fps=bare_fps,
                served_over_bare=fps / bare_fps if bare_fps else None,
            )
        )
    return rows
