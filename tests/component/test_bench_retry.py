"""``bench run --retry-unavailable``: a stream whose server goes away asks again on a new one."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lipsync_bench.loadgen import LevelPlan
from lipsync_bench.result import BenchResult
from lipsync_bench.runner import RunOptions, run_bench

from lipsync_server.avatar.demo import write_demo_avatar
from lipsync_server.process import ServerProcess
from lipsync_testbed.tcpforward import Endpoint, TcpForwarder

pytestmark = pytest.mark.component

SERVER_ARGS = [
    "--backend",
    "onnxruntime-cpu",
    "--max-batch-size",
    "1",
    "--shutdown-grace-seconds",
    "1",
]
# Enough frames that the level outlives the first server (each takes tens of milliseconds).
FRAMES = 240


@pytest.fixture(scope="module")
def avatar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("avatar")
    write_demo_avatar(path, frames=4, width=320, height=240)
    return path


@pytest.fixture
def servers(
    reference_model: Path, avatar: Path, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    first = ServerProcess(reference_model, avatar, tmp_path / "a.log", extra_args=SERVER_ARGS)
    second = ServerProcess(reference_model, avatar, tmp_path / "b.log", extra_args=SERVER_ARGS)
    with first, second:
        yield first, second


def _endpoint(server: ServerProcess) -> Endpoint:
    host, port = server.target.rsplit(":", 1)
    return host, int(port)


def test_a_stream_survives_its_server_going_away_without_losing_a_frame(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = servers
    backends = [_endpoint(first)]
    with TcpForwarder(lambda: list(backends)) as forwarder:
        options = RunOptions(
            targets=[forwarder.target],
            streams=[2],
            frames=FRAMES,
            warmup_frames=0,
            retry_unavailable=True,
        )
        result: list[BenchResult] = []
        some_served = threading.Event()

        def on_level(plan: LevelPlan) -> Callable[[int], None]:
            seen = [0]

            def on_frames(count: int) -> None:
                seen[0] += count
                if seen[0] >= 4:
                    some_served.set()

            return on_frames

        bench = threading.Thread(
            target=lambda: result.append(asyncio.run(run_bench(options, sys.argv, on_level)))
        )
        bench.start()
        # Some frames through, then the endpoint moves (a rollout) and the old server stops.
        assert some_served.wait(timeout=120), "no frame served"
        backends[:] = [_endpoint(second)]
        first.stop()
        bench.join(timeout=300)
    [run] = result
    [level] = run.levels
    assert level.frames_sent == FRAMES
    assert level.errors == {}
    assert level.frames_received == FRAMES
    assert level.retried, "the old server's streams should have been asked again"
    assert level.max_frame_gap_ms is not None
    assert level.max_frame_gap_ms > 0
