"""Regenerate ``benchmarks/RESULTS.md`` from fresh measurements on this machine.

Runs, one after the other so they do not share the CPU:

1. ``lipsync bench matrix``: every backend/precision available here, built by the engine builder
   and served by ``lipsync serve`` under the same closed-loop load at 1..32 streams, with the bare
   backend at the same batch size, the hot-path profile and the cost table (``results/<slug>/``);
2. ``benchmarks/backend_micro.py``: the bare backend at batch 1, 2, 4, 8;
3. ``benchmarks/precision_cpu.py``: FP32 vs INT8 built by the engine builder, interleaved;
4. ``benchmarks/speech_sessions.py``: speech-in sessions (PCM through the audio encoder and the
   UNet) at 1..16 live sessions, and the silence fast path on speech with pauses.

and writes their Markdown under one header that names the machine, the date and the commands.

    uv run python benchmarks/results.py            # or: make bench
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
from lipsync_bench.machine import cpu_model

HERE = Path(__file__).resolve().parent
SPEECH_TITLE = "## Speech in: audio encoder + UNet sessions (`benchmarks/speech_sessions.py`)"
LIPSYNC = str(Path(sys.executable).parent / "lipsync")


@dataclass(frozen=True)
class Step:
    title: str
    argv: list[str]
    shown: str  # the command as a reader runs it

    def run(self) -> str:
        click.echo(f"==> {self.title}: {self.shown}", err=True)
        done = subprocess.run(self.argv, stdout=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            raise click.ClickException(f"{self.shown} exited with {done.returncode}")
        return done.stdout


def _relink_images(report: str, prefix: str) -> str:
    """The matrix report links its charts relative to its own directory."""
    return re.sub(r"!\[([^]]*)\]\(([^)/]+\.png)\)", rf"![\1]({prefix}/\2)", report)


def _nest_report(report: str) -> str:
    """The matrix report under a section of RESULTS.md: its title dropped, headings one deeper."""
    body = re.sub(r"\A# [^\n]*\n+", "", report)
    return re.sub(r"^(#+) ", r"#\1 ", body, flags=re.MULTILINE)


def time_builds() -> str:
    """Wall time of ``lipsync build`` (process start included): a first build, then a cache hit."""
    with tempfile.TemporaryDirectory() as scratch:
        model = Path(scratch) / "unet328.onnx"
        subprocess.run([LIPSYNC, "model", "reference", "-o", str(model)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        argv = [LIPSYNC, "build", "--model", str(model), "--cache", str(Path(scratch) / "cache"),
                "--precision", "fp32", "--backend", "onnxruntime-cpu"]  # fmt: skip
        rows = []
        for label in ("first build (publish)", "same build again (cache hit)"):
            start = time.perf_counter()
            done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, check=True)  # fmt: skip
            seconds = time.perf_counter() - start
            hit = json.loads(done.stdout.strip().splitlines()[-1])["cacheHit"]
            rows.append(f"| {label} | {seconds:.2f} | {hit} |")
    command = "`uv run lipsync build --model unet328.onnx --cache DIR --precision fp32`"
    return "\n".join(
        [f"Command, run twice: {command}", "", "| run | wall s | cacheHit |",
         "| --- | ---: | --- |", *rows]
    )  # fmt: skip


@click.command()
@click.option("--report-dir", default="results/cpu", show_default=True,
              help="Matrix report directory, relative to benchmarks/.")  # fmt: skip
@click.option("--streams", default="1,2,4,8,16,32", show_default=True)
@click.option("--duration", default=20.0, show_default=True, help="Measured seconds per level.")
@click.option("--max-batch-size", default=4, show_default=True)
@click.option("--frames", default=16, show_default=True, help="Frames timed per batch size.")
def main(report_dir: str, streams: str, duration: float, max_batch_size: int, frames: int) -> None:
    """Measure everything RESULTS.md reports and rewrite it."""
    out = HERE / report_dir
    python = sys.executable
    matrix = Step(
        "serving matrix",
        [LIPSYNC, "bench", "matrix", "-o", str(out), "--streams", streams,
         "--duration", str(duration), "--max-batch-size", str(max_batch_size)],
        f"uv run lipsync bench matrix -o benchmarks/{report_dir} --streams {streams} "
        f"--duration {duration:g} --max-batch-size {max_batch_size}",
    )  # fmt: skip
    micro = Step(
        "batch size, bare backend",
        [python, str(HERE / "backend_micro.py"), "--batches", "1,2,4,8", "--frames", str(frames)],
        f"uv run python benchmarks/backend_micro.py --batches 1,2,4,8 --frames {frames}",
    )
    precision = Step(
        "fp32 vs int8",
        [python, str(HERE / "precision_cpu.py"), "--batches", "1", "--batches", "4",
         "--frames", str(frames)],
        f"uv run python benchmarks/precision_cpu.py --batches 1 --batches 4 --frames {frames}",
    )  # fmt: skip
    speech = Step(
        "speech-in sessions",
        [python, str(HERE / "speech_sessions.py"), "--sessions", "1,2,4,8,16", "--seconds", "2"],
        "uv run python benchmarks/speech_sessions.py --sessions 1,2,4,8,16 --seconds 2",
    )
    started = datetime.datetime.now(datetime.UTC)
    matrix.run()
    micro_md = micro.run()
    precision_md = precision.run()
    speech_md = speech.run()
    click.echo("==> engine builder: a build, then the same build again", err=True)
    builds_md = time_builds()
    report = (out / "report.md").read_text(encoding="utf-8")
    header = [
        "# Benchmark results",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {platform.machine()} Linux, "
        f"{os.cpu_count()} logical cores ({cpu_model()}), no GPU, Python "
        f"{platform.python_version()}; nothing else ran on the machine meanwhile. Regenerate with "
        "`make bench` (`uv run python benchmarks/results.py`), which runs:",
        "",
        *[f"- {step.title}: `{step.shown}`" for step in (matrix, micro, precision, speech)],
        "",
        "Model: the reference UNet-328 (`lipsync model reference`, seed 0, 12.19 M parameters, "
        "9.77 GFLOP per frame) with seeded random weights; avatar: the 1280x720 demo avatar. "
        "GPU results are added when a GPU machine runs the same command. The local "
        "Kubernetes test bed's build and start times are in [CLUSTER.md](CLUSTER.md).",
        "",
    ]
    body = [
        "## Serving matrix (`lipsync bench matrix`)",
        "",
        _nest_report(_relink_images(report, report_dir)).strip(),
        "",
        "## Batch size: bare backend (`benchmarks/backend_micro.py`)",
        "",
        micro_md.strip(),
        "",
        "## FP32 vs INT8 on ONNX Runtime CPU (`benchmarks/precision_cpu.py`)",
        "",
        precision_md.strip(),
        "",
        SPEECH_TITLE,
        "",
        speech_md.strip(),
        "",
        "## Engine builder: first build and cache hit (`lipsync build`)",
        "",
        builds_md,
        "",
    ]
    target = HERE / "RESULTS.md"
    target.write_text("\n".join(header + body), encoding="utf-8")
    click.echo(f"wrote {target}", err=True)


if __name__ == "__main__":
    main()
