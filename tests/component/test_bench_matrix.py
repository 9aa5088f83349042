"""``lipsync bench matrix`` end to end on one variant: build, serve, load, bare backend, report."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from lipsync_bench.cli import bench
from lipsync_bench.result import BenchResult

pytestmark = pytest.mark.component


def test_matrix_builds_serves_loads_and_reports_one_variant(
    reference_model: Path, small_avatar: Path, tmp_path: Path
) -> None:
    out, work = tmp_path / "report", tmp_path / "work"
    args = [
        "matrix", "-o", str(out), "--work-dir", str(work),
        "--model", str(reference_model), "--avatar", str(small_avatar),
        "--only", "onnxruntime-cpu fp32", "--streams", "1,2", "--frames", "4",
        "--warmup-frames", "0", "--max-batch-size", "2", "--bare-iterations", "2",
    ]  # fmt: skip
    run = CliRunner().invoke(bench, args)
    assert run.exit_code == 0, run.output

    result = BenchResult.read(out / "onnxruntime-cpu-fp32.json")
    assert result.model.backend == "onnxruntime-cpu"
    assert result.model.precision == "fp32"
    assert result.model.key.startswith("sha256:")
    assert [level.streams for level in result.levels] == [1, 2]
    for level in result.levels:
        assert level.frames_received + sum(level.errors.values()) == level.frames_sent
        assert level.frames_received > 0
    assert result.bare is not None
    assert result.bare.batch_size == 2
    assert result.bare.iterations == 2  # one batch before the served load, one after
    assert result.bare.fps > 0
    assert any("TensorRT: not measured" in note for note in result.notes)

    report = (out / "report.md").read_text()
    assert "| onnxruntime-cpu fp32 | 2 | 2 |" in report  # served vs bare: batch 2, 2 iterations
    assert (out / "stages.png").read_bytes().startswith(b"\x89PNG")
    # Work files stay out of the report directory.
    assert sorted(p.name for p in out.iterdir() if p.suffix not in (".png",)) == [
        "onnxruntime-cpu-fp32.json",
        "report.md",
    ]
