"""The device run behind ``hack/gpu/device-run.sh``: each step in a subprocess under the time left,
its outcome recorded whether it passes or not, then ``device-run.json`` and ``device-run.md``.

Steps, serving first so that compiling cannot eat its time: what the device offers around the
model (``device_probe.py``: nvidia-smi, pinned and pageable copies, JPEG on the device alone and
beside the UNet); ``lipsync serve --backend torch --postprocess torch`` driven by ``lipsync bench
run``, closed loop over stream counts and open loop at fixed rates (frames/s, p99, server CPU, GPU
utilization, batch sizes); the PyTorch modes of the reference UNet-328 by batch size
(``benchmarks/torch_modes.py``: eager, compile, AOTInductor); the ``gpu`` test tier.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@dataclass(frozen=True)
class Plan:
    device: str
    batches: str
    modes: str
    runs: int
    streams: str
    open_rates: str
    open_streams: int
    seconds_per_level: float
    max_batch: int
    probe_seconds: float

    @classmethod
    def for_device(cls, device: str, dry_run: bool) -> Plan:
        if dry_run:  # the CPU dry run: every step, a few frames each
            return cls(device, "1,2", "eager-fp32,eager-fp16,aoti", 2, "1,2", "2,4", 4, 2.0, 2, 0.5)
        return cls(device, "1,8,32", "eager-fp32,eager-fp16,compile,aoti", 20,
                   "1,2,4,8,16,32,64", "1500,3000,3750", 64, 8.0, 32, 3.0)  # fmt: skip


@dataclass
class Step:
    name: str
    command: list[str]
    ok: bool = False
    seconds: float = 0.0
    exit_code: int | None = None
    tail: str = ""
    summary: dict[str, object] = field(default_factory=dict)


def run_step(step: Step, deadline: float, log_dir: Path) -> Step:
    left = deadline - time.monotonic()
    if left < 10:
        step.tail = "skipped: the time budget is spent"
        return step
    began = time.monotonic()
    log_path = log_dir / f"{step.name}.log"
    with log_path.open("w") as log:
        try:
            done = subprocess.run(
                step.command,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=left,
                check=False,
            )
            step.exit_code = done.returncode
        except subprocess.TimeoutExpired:
            step.exit_code = None
    step.seconds = round(time.monotonic() - began, 1)
    step.ok = step.exit_code == 0
    step.tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    return step


def serve_command(plan: Plan, out: Path, work: Path) -> list[str]:
    return [
        PYTHON,
        str(ROOT / "hack/gpu/serve_bench.py"),
        "--device",
        plan.device,
        "--streams",
        plan.streams,
        "--open-rates",
        plan.open_rates,
        "--open-streams",
        str(plan.open_streams),
        "--seconds",
        str(plan.seconds_per_level),
        "--max-batch",
        str(plan.max_batch),
        "--work",
        str(work),
        "--out",
        str(out),
    ]


def level_rows(result_path: Path) -> list[dict[str, object]]:
    """Streams, frames/s, p99, server CPU (100 = one core), GPU utilization and mean batch of
    each level of a ``bench run`` result."""
    if not result_path.exists():
        return []
    document = json.loads(result_path.read_text())
    rows = []
    for level in document.get("levels", []):
        latency = level.get("latency") or {}
        resources = level.get("resources") or {}
        stages = level.get("server_stages") or {}
        rows.append(
            {
                "streams": level["streams"],
                "fps": round(level["fps_total"], 2),
                "p99_ms": latency.get("p99_ms"),
                "errors": sum(level["errors"].values()),
                "server_cpu_percent": resources.get("cpu_percent_server"),
                "gpu_util_percent": resources.get("gpu_util_percent"),
                "mean_batch": stages.get("mean_batch_size"),
            }
        )
    return rows


LEVEL_COLUMNS = {
    "streams": "streams",
    "fps": "frames/s",
    "p99_ms": "p99 ms",
    "errors": "errors",
    "server_cpu_percent": "server CPU %",
    "gpu_util_percent": "GPU util %",
    "mean_batch": "mean batch",
}


def level_table(rows: list[dict[str, object]], columns: dict[str, str]) -> list[str]:
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + " ---: |" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[key]) for key in columns) + " |" for row in rows]
    return lines


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def open_rows(out: Path, plan: Plan) -> list[dict[str, object]]:
    """One row per open-loop rate: the rate asked and what the level achieved."""
    rows = []
    for rate in plan.open_rates.split(","):
        for row in level_rows(out / f"serve-open-{rate}.json"):
            rows.append({"rate": int(rate), **row})
    return rows


def test_summary(log_text: str) -> str:
    """pytest's closing line (``3 passed, 5 skipped in 2.1s``)."""
    pattern = re.compile(r"\d+ (passed|failed|skipped|error|errors|deselected)\b.* in [\d.]+s")
    lines = [line.strip("= ") for line in log_text.splitlines() if pattern.search(line)]
    return lines[-1] if lines else ""


def markdown(plan: Plan, steps: list[Step], out: Path) -> str:
    lines = [
        "# Device run",
        "",
        f"Device: {plan.device}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| step | ok | seconds |",
        "| --- | --- | ---: |",
    ]
    lines += [f"| {s.name} | {'yes' if s.ok else 'NO'} | {s.seconds} |" for s in steps]
    probe = out / "probe.md"
    if probe.exists():
        lines += ["", "## Device: copies, JPEG, engines", "", probe.read_text().strip()]
    rows = level_rows(out / "serve.json")
    if rows:
        lines += ["", "## lipsync serve --backend torch --postprocess torch: closed loop", ""]
        lines += level_table(rows, LEVEL_COLUMNS)
    rates = open_rows(out, plan)
    if rates:
        lines += ["", "## Open loop: a fixed rate of frames over the streams", ""]
        lines += level_table(rates, {"rate": "frames/s asked", **LEVEL_COLUMNS})
    batches = out / "batches.json"
    if batches.exists():
        lines += ["", "## Batch sizes (batches by size, per run)", ""]
        for run, counts in json.loads(batches.read_text()).items():
            used = {size: int(n) for size, n in counts.items() if n}
            lines.append(f"- {run}: {used}")
    modes = out / "torch_modes.md"
    if modes.exists():
        lines += ["", "## PyTorch modes", "", modes.read_text().strip()]
    tests = next((s for s in steps if s.name == "gpu-tests"), None)
    if tests is not None:
        lines += ["", "## gpu test tier", "", f"`{tests.summary.get('result', tests.tail[-200:])}`"]
    return "\n".join(lines) + "\n"


def main() -> int:
    out = Path(os.environ["OUT"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = os.environ.get("LIPSYNC_DEVICE", "cuda")
    plan = Plan.for_device(device, os.environ.get("LIPSYNC_DRY_RUN", "0") == "1")
    deadline = time.monotonic() + float(os.environ.get("LIPSYNC_BUDGET_S", "500"))
    work = out / "work"
    work.mkdir(exist_ok=True)
    steps = [
        Step(
            "probe",
            [
                PYTHON,
                str(ROOT / "hack/gpu/device_probe.py"),
                "--device",
                device,
                "--seconds",
                str(plan.probe_seconds),
                "--out",
                str(out),
            ],
        ),
        Step("serve-torch", serve_command(plan, out, work)),
        Step(
            "torch-modes",
            [
                PYTHON,
                str(ROOT / "benchmarks/torch_modes.py"),
                "--device",
                device,
                "--batches",
                plan.batches,
                "--modes",
                plan.modes,
                "--runs",
                str(plan.runs),
                "--json",
                str(out / "torch_modes.json"),
                "--markdown",
                str(out / "torch_modes.md"),
            ],
        ),
        Step(
            "gpu-tests",
            [
                PYTHON,
                "-m",
                "pytest",
                "-m",
                "gpu",
                "-rs",
                "-q",
                "-p",
                "no:cacheprovider",
                "--junitxml",
                str(out / "gpu-tests.xml"),
                "tests/gpu",
            ],
        ),
    ]
    for step in steps:
        run_step(step, deadline, out)
        print(f"{step.name}: {'ok' if step.ok else 'FAILED'} in {step.seconds} s", flush=True)
    by_name = {step.name: step for step in steps}
    by_name["gpu-tests"].summary["result"] = test_summary(
        (out / "gpu-tests.log").read_text() if (out / "gpu-tests.log").exists() else ""
    )
    by_name["serve-torch"].summary["levels"] = level_rows(out / "serve.json")
    by_name["serve-torch"].summary["open"] = open_rows(out, plan)
    if (out / "probe.json").exists():
        by_name["probe"].summary = json.loads((out / "probe.json").read_text())
    document = {"plan": asdict(plan), "steps": [asdict(step) for step in steps]}
    (out / "device-run.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "device-run.md").write_text(markdown(plan, steps, out))
    return 0 if all(step.ok for step in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
