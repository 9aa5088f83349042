"""``lipsync compare`` on synthetic bench results: the summary table's figures and the charts."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from lipsync_bench import latency
from lipsync_bench.cli import compare
from lipsync_bench.markdown import profile_table
from lipsync_bench.result import (
    BareResult,
    BenchResult,
    LevelResult,
    LoadConfig,
    MachineInfo,
    ModelInfo,
    StageTimes,
    Versions,
)
from lipsync_bench.summary import CostOptions, summary_rows

pytestmark = pytest.mark.unit


def _level(streams: int, fps: float, p50_ms: float) -> LevelResult:
    samples = [p50_ms * (0.5 + i / 100) for i in range(101)]
    frames = len(samples)
    return LevelResult(
        streams=streams,
        duration_s=frames / fps,
        frames_sent=frames + 1,
        frames_received=frames,
        errors={"RESOURCE_EXHAUSTED": 1},
        fps_total=fps,
        fps_per_stream_mean=fps / streams,
        fps_per_stream_min=fps / streams,
        latency=latency.summarize(samples),
        stages=StageTimes(
            source="frame-timings",
            queue_ms=1.0,
            preprocess_ms=2.0,
            infer_ms=8.0 * streams,
            postprocess_ms=3.0,
            encode_ms=4.0,
            total_ms=20.0,
            mean_batch_size=float(streams),
        ),
    )


def _result(name: str, fps_one: float, fps_best: float, bare_fps: float) -> BenchResult:
    return BenchResult(
        name=name,
        created="2026-01-01T00:00:00+00:00",
        command=["lipsync", "bench", "run"],
        machine=MachineInfo(
            cpu_model="test cpu",
            cpu_cores_logical=2,
            cpu_cores_physical=1,
            memory_gib=24,
            platform="linux",
        ),
        versions=Versions(python="3.11", onnxruntime="1", lipsync="0.1.0"),
        model=ModelInfo(
            backend=name.split(maxsplit=1)[0], precision=name.split()[1], max_batch_size=4
        ),
        config=LoadConfig(targets=["127.0.0.1:1"], streams=[1, 4], duration_s=1.0),
        levels=[_level(1, fps_one, 40.0), _level(4, fps_best, 90.0)],
        bare=BareResult(
            batch_size=4,
            iterations=3,
            infer_ms_mean=4000 / bare_fps,
            infer_ms_p50=1.0,
            infer_ms_p99=1.0,
            fps=bare_fps,
        ),
    )


def _files(tmp_path: Path) -> list[Path]:
    paths = []
    for result in (
        _result("torch fp32", 25.0, 150.0, 160.0),
        _result("tensorrt fp16", 33.0, 210.0, 220.0),
    ):
        path = tmp_path / f"{result.name.replace(' ', '-')}.json"
        result.write(path)
        paths.append(path)
    return paths


def test_summary_rows_derive_every_figure_from_the_measurements(tmp_path: Path) -> None:
    results = [BenchResult.read(p) for p in _files(tmp_path)]
    base, trt = summary_rows(results, None, CostOptions(effort_hours={"tensorrt fp16": 6}))
    assert base.is_baseline
    assert base.speedup == 1.0
    assert base.monthly_savings == 0
    assert (base.fps_best, base.best_streams, base.fps_one_stream) == (150.0, 4, 25.0)
    assert base.cost_per_1000_fps_hours == pytest.approx(16.67, abs=0.005)
    assert base.monthly_cost == pytest.approx(8 * 2.5 * 730)
    assert base.inference_ms == pytest.approx(8.0)  # one-stream batch of 1
    assert base.total_ms == pytest.approx(40.0, rel=0.01)
    assert trt.fps_devices == 8 * 210.0
    assert trt.speedup == pytest.approx(1.4)
    assert trt.monthly_savings == pytest.approx(8 * 2.5 * 730 * (1 - 150 / 210))
    assert trt.break_even_hours == pytest.approx(600 / (8 * 2.5 * (1 - 150 / 210)))
    assert trt.served_over_bare == pytest.approx(210 / 220)


def test_unknown_baseline_is_a_clear_error(tmp_path: Path) -> None:
    results = [BenchResult.read(p) for p in _files(tmp_path)]
    with pytest.raises(ValueError, match="baseline 'nope' is not among"):
        summary_rows(results, "nope", CostOptions())


def test_compare_writes_the_table_and_the_charts(tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = [*map(str, _files(tmp_path)), "-o", str(out), "--gpus", "4", "--baseline", "torch fp32"]
    run = CliRunner().invoke(compare, args)
    assert run.exit_code == 0, run.output
    report = (out / "report.md").read_text()
    assert "| FPS, 4 devices (extrapolated) [4] | 600.0* | 840.0* |" in report
    assert "| Speedup [5] | 1.00x | 1.40x |" in report
    assert "| Cost per 1,000 FPS-hours [6] | $16.67 | $11.90 |" in report
    assert "tensorrt fp16 | 4 | 101 | 1 |" in report  # sweep row: frames received, errors
    for chart in ("fps_p99.png", "scaling.png", "latency_cdf.png", "stages.png"):
        data = (out / chart).read_bytes()
        assert data.startswith(b"\x89PNG")
        assert len(data) > 1000
        assert f"![{chart}]({chart})" in report


def test_compare_rejects_a_file_that_is_not_a_result(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x"}')
    run = CliRunner().invoke(compare, [str(bad), "-o", str(tmp_path / "out")])
    assert run.exit_code == 2
    assert "not a bench result" in run.output


def test_level_counts_must_add_up() -> None:
    with pytest.raises(ValueError, match=r"frames sent \(3\) != received \(1\) \+ errors \(1\)"):
        LevelResult(
            streams=1,
            duration_s=1,
            frames_sent=3,
            frames_received=1,
            errors={"CANCELLED": 1},
            fps_total=1,
            fps_per_stream_mean=1,
            fps_per_stream_min=1,
            latency=None,
        )


def test_hot_path_table_shows_only_the_stages_the_server_reports() -> None:
    results = [_result("torch fp32", 25.0, 150.0, 160.0)]
    lines = profile_table(results).splitlines()
    assert lines[0] == (
        "| backend | streams | batch | queue | pre-process | infer (batch) | post-process | encode "
        "| server total | unaccounted | client ms |"
    )
    # One stream: 20 ms total - (1 + 2 + 8 + 3 + 4) listed = 2 ms unaccounted; client mean 40.0.
    assert lines[2] == (
        "| torch fp32 | 1 | 1.00 | 1.0 | 2.0 | 8.0 | 3.0 | 4.0 | 20.0 | 2.0 | 40.0 |"
    )
