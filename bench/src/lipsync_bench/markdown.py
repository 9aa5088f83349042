"""Markdown for ``lipsync compare``: the summary table, the streams sweep, the hot-path profile,
served vs bare, the footnotes that define every column, and where each number came from."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from lipsync_bench.result import BenchResult, LevelResult, StageTimes
from lipsync_bench.summary import CostOptions, SummaryRow, single_stream_level

STAGE_FIELDS: tuple[tuple[str, str], ...] = (
    ("queue_ms", "queue"),
    ("batch_assembly_ms", "batch assembly"),
    ("preprocess_ms", "pre-process"),
    ("infer_ms", "infer (batch)"),
    ("postprocess_ms", "post-process"),
    ("composite_ms", "composite"),
    ("encode_ms", "encode"),
    ("total_ms", "server total"),
)


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "never"
    return f"{value:,.{digits}f}"


def _usd(value: float) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(rows: list[SummaryRow], options: CostOptions) -> str:
    k = options.devices
    header = [
        "metric",
        *[f"{r.name}{' (baseline)' if r.is_baseline else ''}" for r in rows],
    ]
    metrics: list[tuple[str, list[str]]] = [
        ("Inference ms / frame [1]", [_num(r.inference_ms) for r in rows]),
        ("Total ms / frame, 1 stream [2]", [_num(r.total_ms) for r in rows]),
        ("FPS, 1 stream", [_num(r.fps_one_stream, 2) for r in rows]),
        (
            "FPS, 1 process, best concurrency [3]",
            [f"{_num(r.fps_best, 2)} ({r.best_streams} streams)" for r in rows],
        ),
        ("p99 ms at best concurrency", [_num(r.p99_best_ms) for r in rows]),
        (f"FPS, {k} devices (extrapolated) [4]", [f"{_num(r.fps_devices, 1)}*" for r in rows]),
        ("Speedup [5]", [f"{r.speedup:.2f}x" for r in rows]),
        ("Cost per 1,000 FPS-hours [6]", [_usd(r.cost_per_1000_fps_hours) for r in rows]),
        (f"Monthly cost, {k} devices' load [7]", [_usd(r.monthly_cost) for r in rows]),
        (f"Monthly savings, {k} devices' load [8]", [_usd(r.monthly_savings) for r in rows]),
        ("Effort hours (input)", [_num(r.effort_hours) for r in rows]),
        ("Break-even hours [9]", [_num(r.break_even_hours) for r in rows]),
        ("Bare backend FPS [10]", [_num(r.bare_fps, 2) for r in rows]),
        ("Served / bare", [_num(r.served_over_bare, 2) for r in rows]),
    ]
    return table(header, [[name, *cells] for name, cells in metrics])


def footnotes(options: CostOptions) -> str:
    k = options.devices
    rate = f"${options.usd_per_device_hour:.2f}"
    return "\n".join(
        [
            "[1] The server's model-call time for a frame's batch divided by the batch size, "
            "at one stream (frame timings); else the bare backend's batch time / batch size.",
            "[2] Mean client-side latency at one stream: request sent to encoded frame received, "
            "gRPC included.",
            "[3] Total frames/s of one server process at the concurrency level (streams) with "
            "the highest throughput among those measured. On CPU a 'device' is this machine.",
            f"[4] {k} x [3], marked * because it is extrapolated from one device, not measured: "
            "it assumes nothing shared between devices becomes the bottleneck.",
            "[5] [3] / the baseline's [3].",
            f"[6] $/device-hour / [3] x 1000 at {rate}/device-hour: the cost of serving "
            "1,000 frames/s for one hour.",
            f"[7] Cost of serving, for {options.hours_per_month:g} hours a month, the load that "
            f"{k} baseline devices serve: {k} x {rate} x {options.hours_per_month:g} h x "
            "baseline FPS / FPS.",
            "[8] The baseline's [7] minus this one's: the baseline cost x (1 - 1/speedup).",
            f"[9] Hours of operation on {k} devices until [8] repays a one-off effort of effort "
            f"hours x ${options.usd_per_effort_hour:.0f}/hour; 'never' if nothing is saved.",
            "[10] The backend alone in the bench process (no gRPC, no compositing), at the "
            "batch size given in the bare table.",
        ]
    )


def sweep_table(results: list[BenchResult]) -> str:
    header = ["backend", "streams", "frames", "errors", "FPS", "FPS/stream", "p50 ms", "p99 ms"]
    rows = []
    for result in results:
        for lv in sorted(result.levels, key=lambda level: level.streams):
            lat = lv.latency
            rows.append(
                [
                    result.name,
                    str(lv.streams),
                    str(lv.frames_received),
                    str(sum(lv.errors.values())),
                    _num(lv.fps_total, 2),
                    _num(lv.fps_per_stream_mean, 2),
                    _num(lat.p50_ms if lat else None),
                    _num(lat.p99_ms if lat else None),
                ]
            )
    return table(header, rows)


def bare_table(results: list[BenchResult], rows: list[SummaryRow]) -> str:
    header = [
        "backend",
        "batch",
        "iterations",
        "batch ms mean",
        "p50",
        "p99",
        "bare FPS",
        "served FPS (best)",
        "served / bare",
    ]
    lines = []
    for result, row in zip(results, rows, strict=True):
        bare = result.bare
        if bare is None:
            continue
        lines.append(
            [
                result.name,
                str(bare.batch_size),
                str(bare.iterations),
                _num(bare.infer_ms_mean),
                _num(bare.infer_ms_p50),
                _num(bare.infer_ms_p99),
                _num(bare.fps, 2),
                _num(row.fps_best, 2),
                _num(row.served_over_bare, 2),
            ]
        )
    return table(header, lines) if lines else "(no bare-backend measurement in these results)"


def stage_values(stages: StageTimes) -> dict[str, float]:
    """Stage label -> mean ms per frame, only the stages the source reports."""
    values = {}
    for attr, label in STAGE_FIELDS:
        value = getattr(stages, attr)
        if value is not None:
            values[label] = float(value)
    return values


def profiled_levels(result: BenchResult) -> list[LevelResult]:
    """The one-stream level (a frame's own work) and the best level (with queueing)."""
    levels = [lv for lv in (single_stream_level(result), result.best_level()) if lv is not None]
    return [lv for i, lv in enumerate(levels) if lv.stages is not None and lv not in levels[:i]]


def unaccounted_ms(stages: StageTimes) -> float | None:
    """Server total minus the listed stages: waiting between stages (e.g. for a post-process
    thread) and whatever the server does not time separately."""
    if stages.total_ms is None:
        return None
    listed = sum(v for label, v in stage_values(stages).items() if label != "server total")
    return max(stages.total_ms - listed, 0.0)


def profile_table(results: list[BenchResult]) -> str:
    """Where a served frame's time goes, at one stream and at the best concurrency; only the
    stages the server reports (a stage no level has is left out)."""
    profiled = [(result, level) for result in results for level in profiled_levels(result)]
    fields = [
        (attr, label)
        for attr, label in STAGE_FIELDS
        if any(getattr(level.stages, attr) is not None for _, level in profiled)
    ]
    header = ["backend", "streams", "batch", *[label for _, label in fields]]
    rows = []
    for result, level in profiled:
        st = level.stages
        assert st is not None
        latency = level.latency.mean_ms if level.latency else None
        rows.append(
            [
                result.name,
                str(level.streams),
                _num(st.mean_batch_size, 2),
                *[_num(getattr(st, attr)) for attr, _ in fields],
                _num(unaccounted_ms(st)),
                _num(latency),
            ]
        )
    return table([*header, "unaccounted", "client ms"], rows)


def server_metrics_table(results: list[BenchResult]) -> str:
    header = ["backend", "streams", "metric (mean ms per observation)", "value"]
    rows = []
    for result in results:
        best = result.best_level()
        if best is None or best.server_stages is None:
            continue
        values = {**stage_values(best.server_stages), **best.server_stages.other}
        for label, value in values.items():
            rows.append([result.name, str(best.streams), label, _num(value, 2)])
    return table(header, rows) if rows else "(no server metrics were read)"


def provenance(results: list[BenchResult]) -> str:
    lines = []
    for result in results:
        m, v = result.machine, result.versions
        gpus = ", ".join(g.name for g in m.gpus) or "no GPU"
        load = f", load average {m.load_average_1m:.2f}" if m.load_average_1m is not None else ""
        lines.append(
            f"- **{result.name}**: {result.created}; {m.cpu_model}, {m.cpu_cores_logical} "
            f"logical cores, {m.memory_gib:.0f} GiB, {gpus}{load}; backend {result.model.backend} "
            f"({result.model.provider}, {result.model.precision}, {v.backend or 'version n/a'}), "
            f"max batch {result.model.max_batch_size}; load {result.config.mode} loop, "
            f"{result.config.api}, streams {result.config.streams}; "
            f"command `{' '.join(result.command)}`"
        )
        lines += [f"  - note: {note}" for note in result.notes]
    return "\n".join(lines)


def render_report(
    results: list[BenchResult], rows: list[SummaryRow], options: CostOptions, charts: list[str]
) -> str:
    parts = [
        "# Benchmark comparison",
        "",
        "## Summary",
        "",
        summary_table(rows, options),
        "",
        footnotes(options),
        "",
        "## Throughput and latency by concurrency",
        "",
        sweep_table(results),
        "",
        "## Served vs bare backend",
        "",
        bare_table(results, rows),
        "",
        "## Hot path: where a served frame's time goes (mean ms per frame)",
        "",
        profile_table(results),
        "",
        "From the frame timings the server returns with each frame, at one stream (the frame's "
        "own work) and at the best concurrency (with queueing). 'infer (batch)' is the model "
        "call of the frame's whole batch; 'unaccounted' is the server total minus the stages "
        "listed; 'client ms' adds gRPC, serialisation and the client's own time.",
        "",
        "### Server metrics (Prometheus, difference over the measured run)",
        "",
        server_metrics_table(results),
        "",
    ]
    if charts:
        parts += ["## Charts", ""] + [f"![{c}]({c})" for c in charts] + [""]
    parts += ["## Where the numbers come from", "", provenance(results), ""]
    return "\n".join(parts)
