"""Frames as video: H.264 per stream (an IDR first and on request, every access unit decoded in
order back to the rendered frame) and 4:2:0 JPEG, against raw frames of the same request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server.audio import synthetic_features
from lipsync_server.client import LipSyncStub, features_message
from lipsync_server.compositor import decode
from lipsync_server.process import ServerProcess
from lipsync_server.video import H264Decoder

pytestmark = pytest.mark.component

FRAMES = 12
MIN_PSNR_DB = 30.0  # H.264 at 1.5 Mbit/s and JPEG q85 of a 320x240 frame are well above this
START_CODE = b"\x00\x00\x00\x01"


@pytest.fixture(scope="module")
def server(
    reference_model: Path, small_avatar: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with ServerProcess(reference_model, small_avatar, log, max_batch_size=4) as process:
        yield process


def _generate(target: str, output: pb.OutputOptions) -> list[pb.Frame]:
    request = pb.GenerateRequest(
        frame_indices=list(range(FRAMES)),
        features=features_message(synthetic_features(FRAMES, 512, seed=5)),
        output=output,
    )

    async def call() -> pb.GenerateResponse:
        async with grpc.aio.insecure_channel(target) as channel:
            return await LipSyncStub(channel).Generate(request, timeout=120)

    return list(asyncio.run(call()).frames)


def _raw(frames: list[pb.Frame]) -> list[np.ndarray]:
    return [decode(f.data, "raw-bgr", f.width, f.height) for f in frames]


def test_generate_in_h264_is_one_sequence_that_decodes_to_the_rendered_frames(
    server: ServerProcess,
) -> None:
    raw = _raw(_generate(server.target, pb.OutputOptions(encoding=pb.ENCODING_RAW_BGR)))
    video = _generate(server.target, pb.OutputOptions(encoding=pb.ENCODING_H264))
    assert [f.encoding for f in video] == [pb.ENCODING_H264] * FRAMES
    assert [f.keyframe for f in video] == [True] + [False] * (FRAMES - 1)
    assert video[0].data.startswith(START_CODE)
    assert sum(len(f.data) for f in video) < sum(len(f.data) for f in video[:1]) * FRAMES
    decoder = H264Decoder()
    for frame, expected in zip(video, raw, strict=True):
        [picture] = decoder.decode(frame.data)
        assert picture.shape == (240, 320, 3)
        assert cv2.PSNR(picture, expected) > MIN_PSNR_DB
        assert frame.timings.encode_ms > 0


def test_a_stream_in_h264_sends_a_keyframe_when_asked(server: ServerProcess) -> None:
    features = synthetic_features(2 * FRAMES, 512, seed=6)
    asked_after = 3

    async def collect() -> list[pb.Frame]:
        received: list[pb.Frame] = []
        enough = asyncio.Event()

        async def requests() -> AsyncIterator[pb.StreamGenerateRequest]:
            output = pb.OutputOptions(encoding=pb.ENCODING_H264, bitrate_kbps=800)
            yield pb.StreamGenerateRequest(
                config=pb.StreamConfig(output=output),
                features=features_message(features[:FRAMES]),
            )
            await enough.wait()
            yield pb.StreamGenerateRequest(keyframe=True)
            yield pb.StreamGenerateRequest(features=features_message(features[FRAMES:]))

        async with grpc.aio.insecure_channel(server.target) as channel:
            async for response in LipSyncStub(channel).StreamGenerate(requests(), timeout=120):
                received.append(response.frame)
                if len(received) == asked_after:
                    enough.set()
        return received

    frames = asyncio.run(collect())
    assert [f.index for f in frames] == list(range(2 * FRAMES))
    keys = [f.index for f in frames if f.keyframe]
    assert keys[0] == 0
    assert len(keys) == 2  # the one asked for; the periodic IDR is 2 s (50 frames) away
    assert keys[1] >= asked_after
    decoder = H264Decoder()
    assert all(len(decoder.decode(f.data)) == 1 for f in frames)


def test_jpeg_420_is_smaller_than_444_and_as_close_to_the_frame(server: ServerProcess) -> None:
    raw = _raw(_generate(server.target, pb.OutputOptions(encoding=pb.ENCODING_RAW_BGR)))
    sizes = {}
    for name, subsampling in (("444", pb.JPEG_SUBSAMPLING_444), ("420", pb.JPEG_SUBSAMPLING_420)):
        frames = _generate(server.target, pb.OutputOptions(jpeg_subsampling=subsampling))
        assert all(f.keyframe for f in frames)
        sizes[name] = sum(len(f.data) for f in frames)
        for frame, expected in zip(frames, raw, strict=True):
            picture = decode(frame.data, "jpeg", frame.width, frame.height)
            assert cv2.PSNR(picture, expected) > MIN_PSNR_DB
    assert sizes["420"] < sizes["444"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (
            pb.OutputOptions(encoding=pb.ENCODING_H264, bitrate_kbps=20),
            "bitrate_kbps 20 is outside",
        ),
        (pb.OutputOptions(jpeg_subsampling=7), "unknown jpeg_subsampling 7"),  # type: ignore[arg-type]
    ],
)
def test_bad_output_options_are_invalid_arguments(
    server: ServerProcess, output: pb.OutputOptions, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        _generate(server.target, output)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (refused.value.details() or "")


def test_get_info_names_the_h264_encoder(server: ServerProcess) -> None:
    async def call() -> pb.GetInfoResponse:
        async with grpc.aio.insecure_channel(server.target) as channel:
            return await LipSyncStub(channel).GetInfo(pb.GetInfoRequest())

    assert asyncio.run(call()).h264_encoder == "libx264"  # no NVENC on a CPU machine
