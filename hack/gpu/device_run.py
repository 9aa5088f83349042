"""The device run behind ``hack/gpu/device-run.sh``: each step in a subprocess under the time left,
its outcome recorded whether it passes or not, then ``device-run.json`` and ``device-run.md``.

Steps: the PyTorch modes of the reference UNet-328 by batch size (``benchmarks/torch_modes.py``);
``lipsync serve --backend torch`` on the device driven by ``lipsync bench run`` over a range of
stream counts (composited JPEG frames/s and p99); the ``gpu`` test tier.
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
    seconds_per_level: float
    max_batch: int

    @classmethod
    def for_device(cls, device: str, dry_run: bool) -> Plan:
        if dry_run:  # the CPU dry run: every step, a few frames each
            return cls(device, "1,2", "eager-fp32,eager-fp16,aoti", 2, "1,2", 2.0, 2)
        return cls(
            device, "1,8,32", "eager-fp32,eager-fp16,compile,aoti", 20, "1,2,4,8,16,32,64", 8.0, 32
        )


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
    """Streams, frames/s and p99 of each level of a ``bench run`` result."""
    if not result_path.exists():
        return []
    document = json.loads(result_path.read_text())
    rows = []
    for level in document.get("levels", []):
        latency = level.get("latency") or {}
        rows.append(
            {
                "streams": level["streams"],
                "fps": round(level["fps_total"], 2),
                "p99_ms": latency.get("p99_ms"),
                "errors": sum(level["errors"].values()),
            }
        )
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
    modes = out / "torch_modes.md"
    if modes.exists():
        lines += ["", "## PyTorch modes", "", modes.read_text().strip()]
    rows = level_rows(out / "serve.json")
    if rows:
        lines += [
            "",
            "## lipsync serve --backend torch (composited JPEG frames)",
            "",
            "| streams | frames/s | p99 ms | errors |",
            "| ---: | ---: | ---: | ---: |",
        ]
        lines += [f"| {r['streams']} | {r['fps']} | {r['p99_ms']} | {r['errors']} |" for r in rows]
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
        Step("serve-torch", serve_command(plan, out / "serve.json", work)),
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
    gpu_tests = steps[2]
    gpu_tests.summary["result"] = test_summary(
        (out / "gpu-tests.log").read_text() if (out / "gpu-tests.log").exists() else ""
    )
    steps[1].summary["levels"] = level_rows(out / "serve.json")
    document = {"plan": asdict(plan), "steps": [asdict(step) for step in steps]}
    (out / "device-run.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "device-run.md").write_text(markdown(plan, steps, out))
    return 0 if all(step.ok for step in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
