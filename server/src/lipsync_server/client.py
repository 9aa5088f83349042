"""A small client of the LipSync API (used by the demo, the benchmarks and the tests).

Typical use::

    async with grpc.aio.insecure_channel("localhost:8001") as channel:
        stub = LipSyncStub(channel)
        async for frame in stream_speech(stub, samples, 16000):   # float32 mono [-1, 1]
            ...  # frame.index, frame.data (JPEG), frame.pts_seconds, frame.timings
        async for frame in stream_frames(stub, features):   # features: float32 [T, 512]
            ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc
import numpy as np

from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server._generated.lipsync.v1.lipsync_pb2_grpc import LipSyncStub

if TYPE_CHECKING:
    from lipsync_server._generated.lipsync.v1.lipsync_pb2_grpc import LipSyncAsyncStub

__all__ = [
    "LipSyncStub",
    "features_message",
    "pcm_message",
    "stream_frames",
    "stream_speech",
    "wait_until_serving",
]


def features_message(features: np.ndarray) -> pb.AudioFeatures:
    return pb.AudioFeatures(data=np.ascontiguousarray(features, "<f4").tobytes())


def pcm_message(samples: np.ndarray, sample_rate: int) -> pb.Pcm:
    """Float samples in [-1, 1] as signed 16-bit PCM."""
    scaled = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    return pb.Pcm(sample_rate=sample_rate, format=pb.PCM_FORMAT_S16LE, data=scaled.tobytes())


async def stream_speech(
    stub: LipSyncAsyncStub,
    samples: np.ndarray,
    sample_rate: int,
    *,
    chunk_seconds: float = 0.02,
    real_time: bool = False,
    encoding: pb.Encoding.ValueType = pb.ENCODING_JPEG,
    timeout: float | None = None,
    on_chunk: Callable[[int], None] | None = None,
    latency_budget_ms: int = 0,
) -> AsyncGenerator[pb.Frame]:
    """Stream mono speech in chunks of ``chunk_seconds`` (paced like a live source when
    ``real_time``); yield frames in order. ``on_chunk(end_sample)`` runs as each chunk is sent.
    ``latency_budget_ms``: frames not ready that long after their audio come back skipped."""
    step = max(1, round(chunk_seconds * sample_rate))

    async def requests() -> AsyncIterator[pb.StreamGenerateRequest]:
        output = pb.OutputOptions(encoding=encoding)
        config = pb.StreamConfig(output=output, latency_budget_ms=latency_budget_ms)
        yield pb.StreamGenerateRequest(config=config)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for start in range(0, samples.size, step):
            if real_time:
                await asyncio.sleep(max(0.0, started + start / sample_rate - loop.time()))
            chunk = samples[start : start + step]
            if on_chunk is not None:
                on_chunk(start + chunk.size)
            yield pb.StreamGenerateRequest(pcm=pcm_message(chunk, sample_rate))

    async for response in stub.StreamGenerate(requests(), timeout=timeout):
        yield response.frame


async def stream_frames(
    stub: LipSyncAsyncStub,
    features: np.ndarray,
    *,
    chunk_frames: int = 5,
    encoding: pb.Encoding.ValueType = pb.ENCODING_JPEG,
    jpeg_quality: int = 0,
    timeout: float | None = None,
) -> AsyncIterator[pb.Frame]:
    """Stream ``features [T, dim]`` in chunks of ``chunk_frames``; yield frames in order."""

    async def requests() -> AsyncIterator[pb.StreamGenerateRequest]:
        yield pb.StreamGenerateRequest(
            config=pb.StreamConfig(
                output=pb.OutputOptions(encoding=encoding, jpeg_quality=jpeg_quality)
            )
        )
        for start in range(0, features.shape[0], chunk_frames):
            yield pb.StreamGenerateRequest(
                features=features_message(features[start : start + chunk_frames])
            )

    call = stub.StreamGenerate(requests(), timeout=timeout)
    async for response in call:
        yield response.frame


async def wait_until_serving(
    target: str, timeout: float = 120.0, gone: Callable[[], bool] | None = None
) -> None:
    """Poll grpc.health.v1 until the server reports SERVING; ``gone()`` true stops the wait."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if gone is not None and gone():
                raise TimeoutError(f"{target}: the server exited before serving")
            if loop.time() > deadline:
                raise TimeoutError(f"{target} not serving after {timeout:.0f} s")
            await asyncio.sleep(0.2)
