"""The autoscaling timeline: table rows where something changed, and a PNG chart."""

from __future__ import annotations

from pathlib import Path

import pytest
from lipsync_bench.timeline import Sample, timeline_chart, timeline_table

pytestmark = pytest.mark.unit

SAMPLES = [
    Sample(0, 0, 1, 1, 1, None),
    Sample(5, 0, 1, 1, 1, 0.0),
    Sample(10, 8, 1, 1, 1, 20.0, "load up"),
    Sample(15, 8, 3, 1, 1, 24.0),
    Sample(20, 8, 3, 1, 2, 24.0, "node added"),
    Sample(25, 8, 3, 3, 2, 60.5),
]


def test_the_table_keeps_changes_and_events_only() -> None:
    lines = timeline_table(SAMPLES).splitlines()
    assert lines[0] == "| t (s) | wanted streams | ready/pods | GPU nodes | frames/s | event |"
    body = lines[2:]
    assert [row.split("|")[1].strip() for row in body] == ["0", "10", "15", "20", "25"]
    assert body[0].split("|")[5].strip() == "-"
    assert body[3].split("|")[6].strip() == "node added"
    assert body[4].split("|")[3].strip() == "3/3"


def test_the_chart_is_a_png(tmp_path: Path) -> None:
    name = timeline_chart(SAMPLES, tmp_path / "autoscaling.png", "load up")
    data = (tmp_path / name).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 5_000
