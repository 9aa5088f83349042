"""``lipsync demo`` end to end, with a short clip: models, avatar, server, PCM stream, an MP4
with one video and one audio stream of equal duration."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
import soundfile

from lipsync_server.demo import run_demo
from lipsync_server.mux import probe
from lipsync_server.speech.tts import speak, synthetic_speech

pytestmark = pytest.mark.component

FRAME_S = 0.04


def test_demo_speaks_streams_and_writes_a_video_with_sound(tmp_path: Path) -> None:
    lines: list[str] = []
    run_demo(tmp_path, seconds=0.6, max_batch_size=2, port=0, echo=lines.append)
    assert any(line.startswith("speech: eSpeak NG says") for line in lines), lines
    streams = probe(tmp_path / "demo.mp4")
    assert [(s.kind, s.codec) for s in streams] == [("video", "h264"), ("audio", "aac")]
    video, audio = streams
    assert video.frames == 15
    assert abs(video.duration_s - audio.duration_s) <= FRAME_S
    capture = cv2.VideoCapture(str(tmp_path / "demo.mp4"))
    size = (
        int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    capture.release()
    assert size == (1280, 720)
    sheet = cv2.imread(str(tmp_path / "contact_sheet.png"))
    assert sheet is not None
    assert sheet.shape[1] == 4 * 320
    assert (tmp_path / "cache" / "ave.onnx").is_file()
    assert "exit code 0" in lines[-1]
    assert "p99" in lines[-1]


def test_demo_takes_the_users_own_wav(tmp_path: Path) -> None:
    speech = tmp_path / "speech.wav"
    soundfile.write(str(speech), synthetic_speech(0.5, 44100, seed=4), 44100, subtype="PCM_16")
    lines: list[str] = []
    run_demo(
        tmp_path / "out", seconds=None, max_batch_size=2, port=0, echo=lines.append, audio=speech
    )
    assert f"speech: {speech} (0.5 s at 44100 Hz)" in lines
    video, audio = probe(tmp_path / "out" / "demo.mp4")
    assert video.frames == 13  # ceil(0.5 * 25)
    assert abs(video.duration_s - audio.duration_s) <= FRAME_S


def test_espeak_speaks_offline_from_its_wheel() -> None:
    samples, rate = speak("Testing one two three.")
    assert rate == 22050
    assert 0.8 < samples.size / rate < 3.0
    assert 0.05 < float(abs(samples).max()) <= 1.0
