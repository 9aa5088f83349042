"""A live speech session with a latency budget on a real server: frames that cannot be ready
in time come back as skip markers in their place, counted on /metrics; H.264 stays decodable
around them."""

from __future__ import annotations

import asyncio
import itertools

import av
import grpc
import numpy as np
import pytest
from lipsync_bench.prometheus import scrape_values

from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server.client import LipSyncStub, stream_speech
from lipsync_server.process import ServerProcess
from lipsync_server.speech.tts import synthetic_speech

pytestmark = pytest.mark.component

RATE = 16_000
SECONDS = 3.0
FRAMES = 75  # 3 s at 25 fps
SKIPPED = "lipsync_frames_skipped_total"
# Far below one batch of the reference model on a CPU: frames that queue behind another
# frame's batch cannot make it, so live speech at 25 frames/s gets skipped frames.
TIGHT_BUDGET_MS = 1


def live_session(
    server: ServerProcess, encoding: pb.Encoding.ValueType, budget_ms: int
) -> list[pb.Frame]:
    speech = synthetic_speech(SECONDS, RATE, seed=11)

    async def run() -> list[pb.Frame]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            frames = stream_speech(
                LipSyncStub(channel),
                speech,
                RATE,
                real_time=True,
                encoding=encoding,
                timeout=120,
                latency_budget_ms=budget_ms,
            )
            return [frame async for frame in frames]

    return asyncio.run(run())


def test_frames_over_budget_come_back_skipped_in_place_and_are_counted(
    speech_server: ServerProcess,
) -> None:
    before = scrape_values(speech_server.metrics_url).get(SKIPPED, 0.0)
    frames = live_session(speech_server, pb.ENCODING_JPEG, TIGHT_BUDGET_MS)
    skipped = [f for f in frames if f.skipped]
    rendered = [f for f in frames if not f.skipped]
    # Every frame has its place: indices, times and audio tile the clip as without a budget.
    assert [f.index for f in frames] == list(range(FRAMES))
    assert [f.pts_seconds for f in frames] == pytest.approx([i / 25 for i in range(FRAMES)])
    assert all(a.audio_sample_end == b.audio_sample_start for a, b in itertools.pairwise(frames))
    assert frames[-1].audio_sample_end == SECONDS * RATE
    assert skipped, "no frame over a 1 ms budget"
    assert not frames[0].skipped
    assert all(f.data == b"" and not f.keyframe for f in skipped)
    assert {(f.encoding, f.width, f.height) for f in skipped} == {(pb.ENCODING_JPEG, 320, 240)}
    assert all(f.data for f in rendered)
    after = scrape_values(speech_server.metrics_url)[SKIPPED]
    assert after - before == len(skipped)


def test_h264_skips_frames_without_encoding_them_and_stays_decodable(
    speech_server: ServerProcess,
) -> None:
    frames = live_session(speech_server, pb.ENCODING_H264, TIGHT_BUDGET_MS)
    rendered = [f for f in frames if not f.skipped]
    assert len(rendered) < FRAMES
    assert all(f.encoding == pb.ENCODING_H264 for f in frames)
    # The first frame is always rendered (a skipped one shows the frame before it): the IDR.
    assert rendered[0].index == 0
    assert rendered[0].keyframe
    decoder = av.CodecContext.create("h264", "r")
    pictures = [p for f in rendered for p in decoder.decode(av.Packet(f.data))]
    pictures += decoder.decode(None)
    assert len(pictures) == len(rendered)
    assert {(p.width, p.height) for p in pictures} == {(320, 240)}


def test_without_a_budget_no_frame_is_skipped(speech_server: ServerProcess) -> None:
    frames = live_session(speech_server, pb.ENCODING_RAW_BGR, 0)
    assert len(frames) == FRAMES
    assert not [f for f in frames if f.skipped]
    assert all(len(f.data) == 320 * 240 * 3 for f in frames)
    assert np.frombuffer(frames[0].data, np.uint8).any()
