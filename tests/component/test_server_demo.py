"""``lipsync demo`` end to end, with a short clip: model, avatar, server, stream, video."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from lipsync_server.demo import run_demo

pytestmark = pytest.mark.component


def test_demo_writes_the_video_and_contact_sheet_and_stops_the_server(tmp_path: Path) -> None:
    lines: list[str] = []
    run_demo(tmp_path, seconds=0.2, max_batch_size=2, port=0, echo=lines.append)
    video = cv2.VideoCapture(str(tmp_path / "demo.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert (
        int(video.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(video.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    ) == (1280, 720)
    video.release()
    sheet = cv2.imread(str(tmp_path / "contact_sheet.png"))
    assert sheet is not None
    assert sheet.shape[1] == 4 * 320
    assert (tmp_path / "cache" / "unet328.onnx").is_file()
    assert "exit code 0" in lines[-1]
    assert "p99" in lines[-1]
