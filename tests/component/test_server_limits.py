"""Limits on a real server process: calls in progress, idle connections, a connection's age (new
calls move to a new connection; calls in progress finish), and a reply too large to send."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server.app import grpc_options
from lipsync_server.audio import synthetic_features
from lipsync_server.client import LipSyncStub, features_message
from lipsync_server.config import ServerSettings
from lipsync_server.process import ServerProcess

if TYPE_CHECKING:
    from lipsync_server._generated.lipsync.v1.lipsync_pb2_grpc import LipSyncAsyncStub

pytestmark = pytest.mark.component


def test_limits_become_grpc_channel_arguments(tmp_path: Path) -> None:
    defaults = dict(grpc_options(ServerSettings(model=tmp_path / "m.onnx", avatar=tmp_path)))
    assert defaults["grpc.max_concurrent_streams"] == 100
    assert defaults["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert defaults["grpc.max_connection_idle_ms"] == 300_000
    assert "grpc.max_connection_age_ms" not in defaults  # 0: connections never age out
    aged = ServerSettings(
        model=tmp_path / "m.onnx", avatar=tmp_path,
        max_connection_age_seconds=1.5, max_connection_idle_seconds=0,
    )  # fmt: skip
    options = dict(grpc_options(aged))
    assert options["grpc.max_connection_age_ms"] == 1500
    assert "grpc.max_connection_idle_ms" not in options


async def _held_stream(stub: LipSyncAsyncStub, release: asyncio.Event) -> int:
    """A stream that sends its config, then nothing until ``release``; returns its frames."""

    async def requests() -> AsyncIterator[pb.StreamGenerateRequest]:
        yield pb.StreamGenerateRequest(config=pb.StreamConfig())
        await release.wait()

    return len([r async for r in stub.StreamGenerate(requests(), timeout=60)])


async def _served_again(stub: LipSyncAsyncStub) -> pb.GetInfoResponse:
    """GetInfo once the server has counted the ended calls out (a moment after the client)."""
    for _ in range(50):
        try:
            return await stub.GetInfo(pb.GetInfoRequest(), timeout=10)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("still refused 5 s after the held calls ended")


def test_calls_past_the_limit_are_refused_and_served_again_once_one_ends(
    reference_model: Path, small_avatar: Path, tmp_path: Path
) -> None:
    async def scenario(target: str) -> tuple[grpc.StatusCode, str, int, int]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = LipSyncStub(channel)
            release = asyncio.Event()
            held = [asyncio.create_task(_held_stream(stub, release)) for _ in range(2)]
            await asyncio.sleep(1.0)  # both streams are in progress
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetInfo(pb.GetInfoRequest(), timeout=10)
            release.set()
            frames = await asyncio.gather(*held)
            info = await _served_again(stub)
            error = refused.value
            return error.code(), error.details() or "", sum(frames), info.max_queue_size

    with ServerProcess(
        reference_model, small_avatar, tmp_path / "server.log", max_concurrent_rpcs=2
    ) as server:
        code, details, frames, queue = asyncio.run(scenario(server.target))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Concurrent RPC limit exceeded" in details
    assert frames == 0  # the held streams sent no audio
    assert queue > 0  # served once a call had ended


def test_an_idle_connection_is_closed_and_an_aged_one_lets_its_stream_finish(
    reference_model: Path, small_avatar: Path, tmp_path: Path
) -> None:
    features = synthetic_features(20, 512, seed=3)

    async def slow_stream(stub: LipSyncAsyncStub) -> int:
        async def requests() -> AsyncIterator[pb.StreamGenerateRequest]:
            yield pb.StreamGenerateRequest(config=pb.StreamConfig())
            for start in range(0, 20, 4):  # 2.5 s of sending: past the connection's age
                await asyncio.sleep(0.5)
                yield pb.StreamGenerateRequest(
                    features=features_message(features[start : start + 4])
                )

        return len([r async for r in stub.StreamGenerate(requests(), timeout=60)])

    async def scenario(target: str) -> tuple[grpc.ChannelConnectivity, int]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = LipSyncStub(channel)
            await stub.GetInfo(pb.GetInfoRequest(), timeout=10)
            await asyncio.sleep(3.0)  # past the idle limit: the server closes the connection
            idle = channel.get_state()
            frames = await slow_stream(stub)
            return idle, frames

    with ServerProcess(
        reference_model, small_avatar, tmp_path / "server.log",
        max_connection_idle_seconds=1, max_connection_age_seconds=1,
    ) as server:  # fmt: skip
        idle, frames = asyncio.run(scenario(server.target))
    assert idle in (grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.CONNECTING)
    assert frames == 20


def test_a_generate_whose_raw_frames_cannot_be_sent_is_refused_before_rendering(
    reference_model: Path, small_avatar: Path, tmp_path: Path
) -> None:
    frame = 320 * 240 * 3  # the small avatar's raw BGR frame
    limit = 2 * 1_000_000  # twice max_message_bytes

    async def generate(target: str, frames: int) -> pb.GenerateResponse:
        features = features_message(synthetic_features(frames, 512, seed=1))
        request = pb.GenerateRequest(
            frame_indices=list(range(frames)),
            features=features,
            output=pb.OutputOptions(encoding=pb.ENCODING_RAW_BGR),
        )
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 4 * limit)]
        ) as channel:
            return await LipSyncStub(channel).Generate(request, timeout=60)

    fits = limit // frame
    with ServerProcess(
        reference_model, small_avatar, tmp_path / "server.log", max_message_bytes=1_000_000
    ) as server:
        assert len(asyncio.run(generate(server.target, fits)).frames) == fits
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            asyncio.run(generate(server.target, fits + 1))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{fits + 1} raw frames of 320x240 are {(fits + 1) * frame} bytes" in (
        refused.value.details() or ""
    )


def test_a_stream_that_goes_quiet_ends_after_the_idle_limit(
    reference_model: Path, small_avatar: Path, tmp_path: Path
) -> None:
    features = synthetic_features(2, 512, seed=4)

    async def quiet_after_one_chunk(target: str) -> tuple[int, grpc.StatusCode, str]:
        async def requests() -> AsyncIterator[pb.StreamGenerateRequest]:
            yield pb.StreamGenerateRequest(config=pb.StreamConfig())
            yield pb.StreamGenerateRequest(features=features_message(features))
            await asyncio.sleep(600)  # never sends again, never half-closes

        frames = 0
        async with grpc.aio.insecure_channel(target) as channel:
            try:
                async for _ in LipSyncStub(channel).StreamGenerate(requests(), timeout=120):
                    frames += 1
            except grpc.aio.AioRpcError as error:
                return frames, error.code(), error.details() or ""
        raise AssertionError("the stream ended without an error")

    with ServerProcess(
        reference_model, small_avatar, tmp_path / "server.log", stream_idle_seconds=1
    ) as server:
        frames, code, details = asyncio.run(quiet_after_one_chunk(server.target))
    # Its two frames wait for the audio after them (the window's look-ahead) or the stream's
    # end, neither of which comes.
    assert frames == 0
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "the stream was idle (stream_idle_seconds)" in details
