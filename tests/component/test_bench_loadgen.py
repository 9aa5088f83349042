"""A short ``lipsync bench run`` against a real ``lipsync serve`` subprocess on loopback."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from lipsync_bench.cli import bench
from lipsync_bench.result import BenchResult
from lipsync_bench.runner import RunOptions, run_bench

from lipsync_server.avatar.demo import write_demo_avatar
from lipsync_server.process import ServerProcess

pytestmark = pytest.mark.component


@pytest.fixture(scope="module")
def server(
    reference_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    avatar = tmp_path_factory.mktemp("avatar")
    write_demo_avatar(avatar, frames=4, width=640, height=360)
    args = [
        "--backend",
        "onnxruntime-cpu",
        "--max-batch-size",
        "2",
        "--max-frames-per-request",
        "1",
    ]
    log_path = tmp_path_factory.mktemp("logs") / "server.log"
    with ServerProcess(reference_model, avatar, log_path, extra_args=args) as running:
        yield running


def test_bench_run_writes_a_result_whose_counts_add_up(
    server: ServerProcess, tmp_path: Path
) -> None:
    output = tmp_path / "result.json"
    args = [
        "run",
        "--target",
        server.target,
        "--metrics",
        server.metrics_url,
        "--server-pid",
        str(server.pid),
        "--streams",
        "1,2",
        "--frames",
        "3",
        "--warmup-frames",
        "1",
        "--name",
        "ort fp32",
        "-o",
        str(output),
    ]
    run = CliRunner().invoke(bench, args)
    assert run.exit_code == 0, run.output
    result = BenchResult.model_validate(json.loads(output.read_text()))
    assert result.name == "ort fp32"
    assert result.model.backend == "onnxruntime-cpu"
    assert result.model.max_batch_size == 2
    assert result.machine.cpu_cores_logical >= 1
    assert [level.streams for level in result.levels] == [1, 2]
    for level in result.levels:
        assert level.frames_sent == 3
        assert level.frames_received + sum(level.errors.values()) == level.frames_sent
        assert level.frames_received == 3
        assert level.fps_total > 0
        assert level.latency is not None
        assert level.latency.count == 3
        assert level.latency.p50_ms <= level.latency.p99_ms <= level.latency.max_ms
        assert level.stages is not None
        assert level.stages.infer_ms is not None
        assert level.stages.infer_ms > 0
        assert level.server_stages is not None
        assert level.server_stages.infer_ms is not None
        assert level.resources is not None
        assert level.resources.cpu_percent_server is not None


@pytest.mark.parametrize("encoding", ["h264", "jpeg-420"])
def test_bench_run_asks_for_each_encoding(
    server: ServerProcess, tmp_path: Path, encoding: str
) -> None:
    output = tmp_path / "result.json"
    args = ["run", "--target", server.target, "--no-metrics", "--frames", "4"]
    args += ["--warmup-frames", "1", "--encoding", encoding, "-o", str(output)]
    run = CliRunner().invoke(bench, args)
    assert run.exit_code == 0, run.output
    [level] = BenchResult.model_validate(json.loads(output.read_text())).levels
    assert (level.frames_received, level.errors) == (4, {})


def test_rejected_requests_are_counted_as_errors_by_status_code(server: ServerProcess) -> None:
    options = RunOptions(
        targets=[server.target],
        streams=[2],
        api="unary",
        frames=4,
        frames_per_request=2,
        warmup_frames=0,
    )
    result = asyncio.run(run_bench(options, sys.argv))
    (level,) = result.levels
    assert level.frames_sent == 4
    assert level.frames_received == 0
    assert level.errors == {"INVALID_ARGUMENT": 4}
    assert level.latency is None


def test_targets_off_this_machine_are_refused(server: ServerProcess) -> None:
    run = CliRunner().invoke(bench, ["run", "--target", "192.0.2.1:8001", "--frames", "1"])
    assert run.exit_code == 2
    assert "is neither loopback nor in the benchmark range 198.18.0.0/15" in run.output
