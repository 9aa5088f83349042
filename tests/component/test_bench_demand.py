"""``bench run --demand-model``: a client of a model scaled to zero exports the streams it wants
while it waits, which is what wakes the model; the gauge drops to zero when it is done."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from lipsync_bench.result import BenchResult
from lipsync_bench.runner import RunOptions, run_bench
from prometheus_client.parser import text_string_to_metric_families

from lipsync_server.avatar.demo import write_demo_avatar
from lipsync_server.process import ServerProcess, free_port
from lipsync_testbed.tcpforward import Endpoint, TcpForwarder

pytestmark = pytest.mark.component

SERVER_ARGS = ["--backend", "onnxruntime-cpu", "--max-batch-size", "1"]


@pytest.fixture
def server(reference_model: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    avatar = tmp_path / "avatar"
    write_demo_avatar(avatar, frames=4, width=320, height=240)
    with ServerProcess(reference_model, avatar, tmp_path / "s.log", extra_args=SERVER_ARGS) as s:
        yield s


def wanted_streams(url: str) -> dict[tuple[str, str], float]:
    """What a Prometheus scrape of the client reads: wanted streams per (namespace, model)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.labels["namespace"], sample.labels["lipsync_dev_model"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "lipsync_wanted_streams"
        for sample in family.samples
    }


def test_a_waiting_client_exports_its_demand_and_is_served_once_a_server_appears(
    server: ServerProcess,
) -> None:
    host, port = server.target.rsplit(":", 1)
    endpoints: list[Endpoint] = []  # the Service of a model at zero: no ready endpoint
    demand_port = free_port()
    url = f"http://127.0.0.1:{demand_port}/metrics"
    with TcpForwarder(lambda: list(endpoints)) as service:
        options = RunOptions(
            targets=[service.target],
            streams=[3],
            frames=12,
            warmup_frames=0,
            retry_unavailable=True,
            demand_model="team-a/anna",
            demand_port=demand_port,
            connect_timeout_s=120,
        )
        result: list[BenchResult] = []
        bench = threading.Thread(
            target=lambda: result.append(asyncio.run(run_bench(options, sys.argv)))
        )
        bench.start()
        # The scaler's view: poll the client's metric until it asks for streams.
        deadline = time.monotonic() + 60
        seen: dict[tuple[str, str], float] = {}
        while time.monotonic() < deadline and not seen.get(("team-a", "anna")):
            try:
                seen = wanted_streams(url)
            except OSError:
                seen = {}
            time.sleep(0.2)
        assert seen == {("team-a", "anna"): 3.0}
        assert not result, "nothing may be served before a server exists"
        endpoints.append((host, int(port)))  # the woken pod becomes Ready
        bench.join(timeout=300)
    [run] = result
    [level] = run.levels
    assert (level.frames_received, level.errors) == (12, {})
    assert any(note.startswith("first answer from the server after") for note in run.notes)
    with pytest.raises(urllib.error.URLError):
        wanted_streams(url)  # the exporter is gone with the run: the demand series ends
