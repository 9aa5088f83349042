"""The viewer's tracks: each frame's speech plays at that frame's presentation time, in 20 ms
audio frames whose timestamps continue the video's; the heard speech is kept only until played."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest

from lipsync_gateway.session import HeardSpeech, SpokenText, resume_index
from lipsync_gateway.tracks import VIDEO_CLOCK, AvatarAudio, AvatarVideo, Playout
from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb

pytestmark = pytest.mark.unit

RATE = 16_000
FRAME_SAMPLES = RATE // 25


def test_each_frames_speech_goes_out_with_the_frames_time() -> None:
    async def scenario() -> tuple[list[av.Packet[Any]], list[av.AudioFrame]]:
        clock = Playout()
        video, audio = AvatarVideo(clock), AvatarAudio(clock, RATE)
        for index in range(3):
            start = index * FRAME_SAMPLES
            video.push(index / 25, b"\x00\x00\x00\x01\x09\x10")
            audio.push(start, np.full(FRAME_SAMPLES, index, np.int16))
        video.end()
        audio.end()
        packets = [await video.recv() for _ in range(3)]
        frames = [await audio.recv() for _ in range(6)]
        return packets, frames

    packets, frames = asyncio.run(scenario())
    video_seconds = [float(p.pts * VIDEO_CLOCK) for p in packets if p.pts is not None]
    assert video_seconds == pytest.approx([0.0, 0.04, 0.08])
    audio_seconds = [float((f.pts or 0) * (f.time_base or 0)) for f in frames]
    assert audio_seconds == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.10])
    assert all(f.time_base == Fraction(1, RATE) and f.samples == 320 for f in frames)
    # Frame i's samples are frame i's speech.
    assert [int(f.to_ndarray()[0, 0]) for f in frames] == [0, 0, 1, 1, 2, 2]


def test_a_track_ends_when_the_stream_does() -> None:
    async def scenario() -> None:
        video = AvatarVideo(Playout())
        video.end()
        with pytest.raises(av.error.EOFError):
            await video.recv()
        assert video.readyState == "ended"

    asyncio.run(scenario())


def test_heard_speech_is_played_back_by_range_and_then_dropped() -> None:
    heard = HeardSpeech()
    heard.append(np.arange(1000, dtype=np.int16))
    assert heard.take(0, 400).tolist() == list(range(400))
    assert heard.start == 400
    heard.append(np.arange(1000, 1200, dtype=np.int16))
    assert heard.take(400, 1100)[[0, -1]].tolist() == [400, 1099]
    assert heard.take(1100, 1200).size == 100
    assert heard.take(1200, 1300).size == 0  # not heard yet: nothing to play...
    assert heard.start == 1200  # ...and nothing dropped
    heard.append(np.arange(1200, 1300, dtype=np.int16))
    assert heard.take(1200, 1300)[0] == 1200


def test_spoken_text_takes_the_microphones_place_until_it_is_said() -> None:
    spoken = SpokenText()
    microphone = np.full(320, 7, np.int16)
    assert spoken.instead_of(microphone) is microphone
    spoken.add(np.arange(500, dtype=np.int16))
    assert spoken.seconds_left == pytest.approx(500 / 16_000)
    assert spoken.instead_of(microphone).tolist() == list(range(320))
    tail = spoken.instead_of(microphone)
    assert tail[:180].tolist() == list(range(320, 500))
    assert not tail[180:].any()  # the end of the speech, padded with silence
    assert spoken.instead_of(microphone) is microphone


def test_a_new_call_resumes_at_the_frame_playing_now_and_never_repeats_one() -> None:
    assert resume_index(None, 5.0) == 0
    last = pb.Frame(index=50, pts_seconds=2.0)  # 25 frames/s
    # The server went away while frame 50 was the last one; the viewer is at 2.5 s by now.
    assert resume_index(last, 2.5) == 63
    # A viewer still behind the last frame sent gets the next one.
    assert resume_index(last, 1.0) == 51
    assert resume_index(pb.Frame(index=0, pts_seconds=0.0), 3.0) == 1
