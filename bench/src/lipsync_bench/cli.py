"""``lipsync bench run``, ``lipsync bench matrix`` and ``lipsync compare``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from lipsync_bench import costs
from lipsync_bench.loadgen import ENCODINGS, LevelPlan
from lipsync_bench.runner import BenchError, RunOptions
from lipsync_bench.summary import CostOptions
from lipsync_server.channels import security_options

OnLevel = Callable[[LevelPlan], Callable[[int], None]]


def _streams(value: str) -> list[int]:
    try:
        levels = [int(part) for part in value.replace(" ", "").split(",") if part]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not levels:
        raise click.BadParameter("give at least one level")
    return levels


def _efforts(values: tuple[str, ...]) -> dict[str, float]:
    efforts = {}
    for value in values:
        name, sep, hours = value.rpartition("=")
        try:
            efforts[name] = float(hours)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=HOURS, got {value!r}")
    return efforts


@contextmanager
def _progress() -> Iterator[OnLevel]:
    """A rich progress bar per level on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield lambda plan: lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:

        def on_level(plan: LevelPlan) -> Callable[[int], None]:
            what = f"{plan.duration_s:g} s" if plan.duration_s is not None else "frames"
            task = progress.add_task(f"{plan.streams} streams ({what})", total=plan.frames)
            return lambda n: progress.advance(task, n)

        yield on_level


def _load_options(func: Callable[..., None]) -> Callable[..., None]:
    """Load shape, shared by ``run`` and ``matrix``."""
    options = [
        click.option(
            "--streams",
            "streams",
            default="1",
            show_default=True,
            help="Concurrency levels, e.g. 1,2,4,8,16,32: one measured run each.",
        ),
        click.option(
            "--api",
            type=click.Choice(["stream", "unary"]),
            default="stream",
            show_default=True,
            help="StreamGenerate streams or unary Generate callers.",
        ),
        click.option(
            "--mode",
            type=click.Choice(["closed", "open"]),
            default="closed",
            show_default=True,
            help="closed: one frame in flight per stream; open: fixed arrival rate.",
        ),
        click.option(
            "--rate",
            "rate_fps",
            type=click.FloatRange(min=0, min_open=True),
            help="Open loop: total frames/s over all streams.",
        ),
        click.option(
            "--duration",
            "duration_s",
            type=click.FloatRange(min=0, min_open=True),
            help="Measured seconds per level.",
        ),
        click.option(
            "--frames",
            type=click.IntRange(min=1),
            help="Measured frames per level (all streams together).",
        ),
        click.option(
            "--warmup-frames",
            default=2,
            show_default=True,
            type=click.IntRange(min=0),
            help="Unmeasured frames per stream before each level.",
        ),
        click.option(
            "--frames-per-request",
            default=1,
            show_default=True,
            type=click.IntRange(min=1),
            help="Unary: frames per Generate call.",
        ),
        click.option(
            "--encoding", type=click.Choice(sorted(ENCODINGS)), default="jpeg", show_default=True
        ),
        click.option(
            "--drain-timeout",
            "drain_timeout_s",
            default=60.0,
            show_default=True,
            type=click.FloatRange(min=0),
            help="Seconds to wait for frames in flight after a level ends.",
        ),
        click.option(
            "--retry-unavailable",
            is_flag=True,
            help="Streams: on UNAVAILABLE, open a new call and ask again for the lost frames.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _cost_options(func: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option(
            "--gpus",
            "devices",
            default=costs.DEFAULT_DEVICES,
            show_default=True,
            type=click.IntRange(min=1),
            help="K: devices for the extrapolated FPS and the monthly figures.",
        ),
        click.option(
            "--usd-per-gpu-hour",
            "usd_per_device_hour",
            default=costs.DEFAULT_USD_PER_DEVICE_HOUR,
            show_default=True,
            type=click.FloatRange(min=0),
            help="Price of one device-hour.",
        ),
        click.option(
            "--hours-per-month",
            default=costs.HOURS_PER_MONTH,
            show_default=True,
            type=click.FloatRange(min=0, min_open=True),
        ),
        click.option(
            "--usd-per-effort-hour",
            default=100.0,
            show_default=True,
            type=click.FloatRange(min=0),
            help="Price of one hour of engineering.",
        ),
        click.option(
            "--default-effort-hours",
            default=4.0,
            show_default=True,
            type=click.FloatRange(min=0),
            help="One-off effort of each non-baseline backend unless --effort-hours.",
        ),
        click.option(
            "--effort-hours",
            "effort",
            multiple=True,
            metavar="NAME=HOURS",
            help="One-off effort of one backend (its result name), repeatable.",
        ),
        click.option("--baseline", help="Result name speedups and savings are relative to."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _pop_costs(params: dict[str, Any]) -> CostOptions:
    """Take the ``_cost_options`` values out of a command's parameters."""
    return CostOptions(
        devices=params.pop("devices"),
        usd_per_device_hour=params.pop("usd_per_device_hour"),
        hours_per_month=params.pop("hours_per_month"),
        usd_per_effort_hour=params.pop("usd_per_effort_hour"),
        default_effort_hours=params.pop("default_effort_hours"),
        effort_hours=_efforts(params.pop("effort")),
    )


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group()
def bench() -> None:
    """Load benchmarks of LipSync servers (loopback and the benchmark range 198.18.0.0/15 only)."""


@bench.command("run")
@click.option(
    "--target",
    "targets",
    multiple=True,
    required=True,
    metavar="HOST:PORT",
    help="Server gRPC endpoint on this machine; repeat to spread streams.",
)
@_load_options
@click.option(
    "--metrics",
    "metrics_urls",
    multiple=True,
    metavar="URL",
    help="Server Prometheus URL(s) for per-stage times "
    "[default: http://HOST:8002/metrics of a single target].",
)
@click.option("--no-metrics", is_flag=True, help="Do not read server metrics.")
@click.option(
    "--server-pid",
    "server_pids",
    multiple=True,
    type=int,
    help="Server process id(s), for their CPU use.",
)
@click.option("--name", default="", help="Label in reports [default: 'BACKEND PRECISION'].")
@click.option("--model-key", default="", help="Engine key to record.")
@click.option(
    "--demand-model",
    default="",
    metavar="NAMESPACE/NAME",
    help="Export lipsync_wanted_streams for this LipSyncModel (what wakes it from zero).",
)
@click.option(
    "--demand-port",
    type=click.IntRange(min=1, max=65535),
    help="Port of the wanted-streams metrics, with --demand-model.",
)
@click.option(
    "--demand-address",
    default="127.0.0.1",
    show_default=True,
    help="Address the wanted-streams metrics listen on (0.0.0.0 in a pod, for Prometheus).",
)
@click.option(
    "--connect-timeout",
    "connect_timeout_s",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait for a server to answer (a model at zero starts one meanwhile).",
)
@security_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the result JSON here (else to stdout).",
)
def run(
    targets: tuple[str, ...],
    streams: str,
    output: Path | None,
    **params: Any,
) -> None:
    """Drive N concurrent streams against the server(s) and record frames/s, latency, errors,
    server stage times, CPU and GPU use."""
    from lipsync_bench.runner import run_bench, split_target

    urls = list(params.pop("metrics_urls"))
    no_metrics = params.pop("no_metrics")
    if not urls and not no_metrics and len(targets) == 1:
        urls = [f"http://{split_target(targets[0])[0]}:8002/metrics"]
    options = RunOptions(
        targets=list(targets),
        streams=_streams(streams),
        metrics_urls=[] if no_metrics else urls,
        server_pids=list(params.pop("server_pids")),
        **params,
    )
    try:
        with _progress() as on_level:
            result = asyncio.run(run_bench(options, sys.argv, on_level))
    except BenchError as exc:
        _fail(str(exc))
        return
    if output:
        result.write(output)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(result.model_dump_json(indent=2))
    for level in result.levels:
        click.echo(
            f"{level.streams:>3} streams: {level.fps_total:8.2f} frames/s, "
            f"p99 {level.latency.p99_ms if level.latency else float('nan'):8.1f} ms, "
            f"{level.frames_received}/{level.frames_sent} frames, errors {level.errors or 0}"
            + (f", retried {level.retried}" if level.retried else "")
            + (
                f", largest gap {level.max_frame_gap_ms:.0f} ms"
                if level.max_frame_gap_ms is not None
                else ""
            ),
            err=True,
        )


@bench.command("matrix")
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Report directory (results, charts, logs, build cache).",
)
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="ONNX model [default: the reference UNet-328, seed 0].",
)
@click.option(
    "--avatar",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Avatar package [default: a 25-frame 1280x720 demo avatar].",
)
@click.option(
    "--max-batch-size",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Server batch limit, engine batch profile and bare-backend batch.",
)
@click.option(
    "--server-arg",
    "server_args",
    multiple=True,
    help="Extra `lipsync serve` argument, repeatable (e.g. --server-arg=--instances=2).",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Build cache, generated inputs, server logs [default: ~/.cache/lipsync/bench].",
)
@click.option(
    "--bare-iterations",
    default=20,
    show_default=True,
    type=click.IntRange(min=2),
    help="Bare-backend batches: half before the served load, half after.",
)
@click.option("--only", multiple=True, help="Only these variants ('onnxruntime-cpu int8').")
@_load_options
@_cost_options
def matrix(out: Path, streams: str, **params: Any) -> None:
    """Build, serve and load every backend/precision available here; then compare them."""
    from lipsync_bench.matrix import MatrixOptions, run_matrix

    cost_options = _pop_costs(params)
    options = MatrixOptions(
        out=out,
        model=params.pop("model"),
        avatar=params.pop("avatar"),
        max_batch_size=params.pop("max_batch_size"),
        server_args=list(params.pop("server_args")),
        bare_iterations=params.pop("bare_iterations"),
        only=list(params.pop("only")),
        baseline=params.pop("baseline"),
        costs=cost_options,
        **({"work_dir": work_dir} if (work_dir := params.pop("work_dir")) else {}),
        load=RunOptions(targets=["127.0.0.1:0"], streams=_streams(streams), **params),
    )
    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    try:
        options.load.validate()
        with _progress() as on_level:
            report = run_matrix(options, sys.argv, echo, on_level)
    except (BenchError, RuntimeError) as exc:
        _fail(str(exc))
        return
    click.echo(f"wrote {report}")


@click.command()
@click.argument(
    "results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Report directory: report.md and PNG charts.",
)
@_cost_options
def compare(results: tuple[Path, ...], out: Path, baseline: str | None, **params: Any) -> None:
    """The summary table (speedup, FPS, cost, savings, break-even) and charts from bench results."""
    from pydantic import ValidationError

    from lipsync_bench.compare import write_comparison

    options = _pop_costs(params)
    try:
        report = write_comparison(list(results), out, baseline, options)
    except ValidationError as exc:
        _fail(f"not a bench result: {exc.errors()[0]['msg']}")
        return
    except ValueError as exc:
        _fail(str(exc))
        return
    click.echo(f"wrote {report}")
