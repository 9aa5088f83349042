"""``hack/gpu/device-run.sh`` dry-run on the CPU: the same script a GPU machine runs, with a CPU
device and a few frames per step, must finish every step and write its JSON and Markdown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.component

pytest.importorskip("torch", reason="the device run measures the PyTorch backends ([torch] extra)")

ROOT = Path(__file__).resolve().parents[2]


# Compiling the AOTInductor package on a loaded 2-core machine takes minutes: the run's own
# budget (1,500 s) and the subprocess timeout bound it, not the tier's 900 s default.
@pytest.mark.timeout(1800)
def test_device_run_dry_run_on_the_cpu_writes_every_result(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": sys.executable,
        "LIPSYNC_DEVICE": "cpu",
        "LIPSYNC_DRY_RUN": "1",
        "LIPSYNC_BUDGET_S": "1500",  # a loaded 2-core CI machine; the GPU run keeps 480
    }
    done = subprocess.run(
        ["bash", str(ROOT / "hack/gpu/device-run.sh")],
        env=env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    report = json.loads((out / "device-run.json").read_text())
    steps = {step["name"]: step for step in report["steps"]}
    failed = {name: step["tail"] for name, step in steps.items() if not step["ok"]}
    assert not failed, failed
    assert done.returncode == 0, done.stderr[-3000:]
    assert report["plan"]["device"] == "cpu"

    modes = json.loads((out / "torch_modes.json").read_text())
    measured = {(row["mode"], row["batch"]) for row in modes["rows"]}
    assert measured == {(m, b) for m in ("eager-fp32", "eager-fp16", "aoti") for b in (1, 2)}
    assert all(row["model_ms_per_frame"] > 0 and row["fps"] > 0 for row in modes["rows"])
    assert modes["header"]["Timing"] == "wall clock"

    assert list(steps) == ["probe", "serve-torch", "torch-modes", "gpu-tests"]  # serving first
    probe = steps["probe"]["summary"]
    assert probe["copies"]["h2d_pageable_gb_s"] > 0
    assert probe["copies"]["d2h_pageable_gb_s"] > 0
    assert probe["jpeg"]["alone_fps"] > 0
    assert probe["jpeg"]["beside_unet_fps"] > 0
    assert probe["jpeg"]["unet_fps_meanwhile"] > 0
    assert probe["nvidia_smi"]["available"] is False  # no driver here: said, not failed

    levels = steps["serve-torch"]["summary"]["levels"]
    assert [level["streams"] for level in levels] == [1, 2]
    assert all(level["fps"] > 0 and level["p99_ms"] > 0 for level in levels)
    assert all(level["server_cpu_percent"] > 0 for level in levels)
    open_loop = steps["serve-torch"]["summary"]["open"]
    assert [row["rate"] for row in open_loop] == [2, 4]
    assert all(row["fps"] > 0 and row["errors"] == 0 for row in open_loop)
    batches = json.loads((out / "batches.json").read_text())
    assert set(batches) == {"serve", "serve-open-2", "serve-open-4"}
    assert all(sum(counts.values()) > 0 for counts in batches.values())

    assert "skipped" in steps["gpu-tests"]["summary"]["result"]
    assert (out / "gpu-tests.xml").is_file()
    text = (out / "device-run.md").read_text()
    for heading in (
        "## Device: copies, JPEG, engines",
        "## lipsync serve --backend torch --postprocess torch: closed loop",
        "## Open loop",
        "## Batch sizes",
        "## PyTorch modes",
        "## gpu test tier",
    ):
        assert heading in text
