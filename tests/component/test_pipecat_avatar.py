"""The Pipecat avatar processor in a Pipecat pipeline (Pipecat's own test source and sink) in
front of a real server: TTS audio in, RGB frames each followed by the speech they show out,
barge-in, and a server that cannot be reached."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.tests.utils import SleepFrame, run_test

from lipsync_pipecat import LipSyncAvatar
from lipsync_server.process import ServerProcess
from lipsync_server.speech.tts import synthetic_speech

pytestmark = pytest.mark.component

TTS_RATE = 24_000  # what common TTS services send
CHUNK = TTS_RATE // 50  # 20 ms
FPS = 25
WIDTH, HEIGHT = 320, 240  # the small avatar


def tts_response(context_id: str, seconds: float, seed: int) -> tuple[list[Frame], bytes]:
    """A TTS service's frames for ``seconds`` of speech, and that speech as int16 bytes."""
    speech = np.round(synthetic_speech(seconds, TTS_RATE, seed=seed) * 32767).astype(np.int16)
    audio = speech.tobytes()
    chunks: list[Frame] = [
        TTSAudioRawFrame(
            audio=audio[start : start + 2 * CHUNK],
            sample_rate=TTS_RATE,
            num_channels=1,
            context_id=context_id,
        )
        for start in range(0, len(audio), 2 * CHUNK)
    ]
    return [TTSStartedFrame(context_id=context_id), *chunks, TTSStoppedFrame(context_id)], audio


def test_a_tts_response_becomes_frames_each_followed_by_the_speech_it_shows(
    speech_server: ServerProcess,
) -> None:
    frames, speech = tts_response("reply-1", 1.5, seed=3)
    down, up = asyncio.run(
        run_test(LipSyncAvatar(speech_server.target), frames_to_send=frames, start_timeout=10)
    )
    assert not [f for f in up if isinstance(f, ErrorFrame)], up
    assert isinstance(down[0], TTSStartedFrame)
    assert isinstance(down[-1], TTSStoppedFrame)
    body = down[1:-1]
    images, audio = body[0::2], body[1::2]
    expected = math.ceil(len(speech) // 2 * FPS / TTS_RATE)
    assert len(images) == len(audio) == expected
    assert all(isinstance(i, OutputImageRawFrame) for i in images), body
    assert all(isinstance(a, TTSAudioRawFrame) for a in audio), body
    for image in images:
        assert isinstance(image, OutputImageRawFrame)
        assert (image.size, image.format, len(image.image)) == (
            (WIDTH, HEIGHT),
            "RGB",
            WIDTH * HEIGHT * 3,
        )
        assert image.sync_with_audio
    # The speech comes back whole, in order, tiled by the frames (the last one padded).
    played = b"".join(a.audio for a in audio if isinstance(a, TTSAudioRawFrame))
    assert played[: len(speech)] == speech
    assert not played[len(speech) :].strip(b"\0")
    assert {(a.sample_rate, a.num_channels, a.context_id) for a in audio} == {  # type: ignore[attr-defined]
        (TTS_RATE, 1, "reply-1")
    }


def test_barge_in_drops_the_rest_of_the_response_and_the_next_one_plays(
    speech_server: ServerProcess,
) -> None:
    long_reply, _ = tts_response("long", 20.0, seed=4)
    next_reply, next_speech = tts_response("next", 0.4, seed=5)
    frames = [*long_reply, SleepFrame(sleep=1.0), InterruptionFrame(), *next_reply]
    down, _ = asyncio.run(
        run_test(LipSyncAvatar(speech_server.target), frames_to_send=frames, start_timeout=10)
    )
    cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
    before, after = down[:cut], down[cut + 1 :]
    shown_before = [f for f in before if isinstance(f, OutputImageRawFrame)]
    assert 0 < len(shown_before) < 20 * FPS, "the long reply was not cut"
    assert not [f for f in before if isinstance(f, TTSStoppedFrame)]
    # After the interruption only the next reply, whole.
    contexts = {f.context_id for f in after if isinstance(f, TTSAudioRawFrame)}
    assert contexts == {"next"}
    shown_after = [f for f in after if isinstance(f, OutputImageRawFrame)]
    assert len(shown_after) == math.ceil(len(next_speech) // 2 * FPS / TTS_RATE)
    assert isinstance(after[-1], TTSStoppedFrame)


def test_an_unreachable_server_is_an_error_upstream_and_other_frames_still_flow() -> None:
    frames, _ = tts_response("reply", 0.2, seed=6)
    down, up = asyncio.run(run_test(LipSyncAvatar("127.0.0.1:1"), frames_to_send=frames))
    errors = [f for f in up if isinstance(f, ErrorFrame)]
    assert errors, up
    assert "127.0.0.1:1" in errors[0].error
    assert "UNAVAILABLE" in errors[0].error
    assert [type(f) for f in down] == [TTSStartedFrame, TTSStoppedFrame]
