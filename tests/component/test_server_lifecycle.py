"""Overload and graceful shutdown of a real server process (ORT on CPU, reference model)."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from lipsync_contract.digest import sha256_file
from lipsync_contract.errors import LipSyncError
from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server.audio import synthetic_features
from lipsync_server.client import LipSyncStub, features_message, stream_frames
from lipsync_server.process import ServerProcess

pytestmark = pytest.mark.component


def test_overload_rejects_with_resource_exhausted_and_admitted_streams_stay_bounded(
    reference_model: Path, small_avatar: Path, tmp_path: Path
) -> None:
    max_batch, queue = 2, 4
    streams, frames_each = 12, 3
    features = synthetic_features(frames_each, 512, seed=1)

    async def one_stream(channel: grpc.aio.Channel) -> list[pb.Frame] | grpc.StatusCode:
        try:
            return [
                f
                async for f in stream_frames(
                    LipSyncStub(channel), features, chunk_frames=frames_each
                )
            ]
        except grpc.aio.AioRpcError as error:
            return error.code()

    async def flood(target: str) -> list[list[pb.Frame] | grpc.StatusCode]:
        async with grpc.aio.insecure_channel(target) as channel:
            calls = [one_stream(channel) for _ in range(streams)]
            return await asyncio.wait_for(asyncio.gather(*calls), timeout=300)

    with ServerProcess(
        reference_model,
        small_avatar,
        tmp_path / "server.log",
        max_batch_size=max_batch,
        max_queue_size=queue,
        max_inflight_per_stream=2,
        max_queue_delay_microseconds=0,
    ) as server:
        outcomes = asyncio.run(flood(server.target))
    assert server.process.returncode == 0

    rejected = [o for o in outcomes if isinstance(o, grpc.StatusCode)]
    admitted = [o for o in outcomes if not isinstance(o, grpc.StatusCode)]
    assert set(rejected) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert rejected, "more streams than the queue admits must be refused"
    assert admitted, "the streams the queue admits must be served"
    for frames in admitted:
        assert [frame.index for frame in frames] == list(range(frames_each))
    timings = [frame.timings for frames in admitted for frame in frames]
    slowest_batch_ms = max(t.infer_ms for t in timings)
    # A queued frame waits at most for the batches ahead of it: the queue, the prepared one, the
    # running one.
    bound_ms = (queue // max_batch + 3) * slowest_batch_ms
    assert max(t.queue_ms for t in timings) <= bound_ms


async def _health(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    return int(reply.status)


def test_sigterm_drains_in_flight_streams_and_exits_zero(
    reference_model: Path, small_avatar: Path, tmp_path: Path
) -> None:
    total = 10  # per stream; 8 vectors make frame 0 ready at once, the rest follow the signal
    features = synthetic_features(total, 512, seed=2)
    server = ServerProcess(
        reference_model,
        small_avatar,
        tmp_path / "server.log",
        max_batch_size=2,
        shutdown_grace_seconds=120,
    )

    async def scenario(target: str) -> tuple[list[list[int]], int, grpc.StatusCode]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = LipSyncStub(channel)
            started = [asyncio.Event(), asyncio.Event()]
            signalled = asyncio.Event()

            async def requests() -> AsyncIterator[pb.StreamGenerateRequest]:
                yield pb.StreamGenerateRequest(features=features_message(features[:8]))
                await signalled.wait()
                for row in range(8, total):
                    yield pb.StreamGenerateRequest(
                        features=features_message(features[row : row + 1])
                    )
                    await asyncio.sleep(0.05)

            async def run(stream: int) -> list[int]:
                indices = []
                async for response in stub.StreamGenerate(requests(), timeout=300):
                    indices.append(response.frame.index)
                    started[stream].set()
                return indices

            tasks = [asyncio.create_task(run(stream)) for stream in range(2)]
            await asyncio.gather(*(event.wait() for event in started))
            server.terminate()
            deadline = time.monotonic() + 30
            status = await _health(channel)
            while (
                status != health_pb2.HealthCheckResponse.NOT_SERVING and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.1)
                status = await _health(channel)
            try:
                await stub.Generate(
                    pb.GenerateRequest(frame_indices=[0], features=features_message(features[:1])),
                    timeout=30,
                )
                refused = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                refused = error.code()
            signalled.set()
            return list(await asyncio.gather(*tasks)), status, refused

    with server:
        indices, status, refused = asyncio.run(scenario(server.target))
        code = server.process.wait(timeout=180)
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert refused == grpc.StatusCode.UNAVAILABLE
    assert indices == [list(range(total)), list(range(total))]  # no frame lost
    assert code == 0
    assert "all calls finished" in server.log_path.read_text()


def _metric(server: ServerProcess, name: str) -> float:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return float(sum(sample.value for sample in family.samples))
    raise AssertionError(f"{name} is not exported")


def _wait_until_idle(server: ServerProcess) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        _metric(server, "lipsync_queue_depth") or _metric(server, "lipsync_active_streams")
    ):
        time.sleep(0.2)


def test_frames_queued_past_the_queue_timeout_are_expired_by_the_server(
    reference_model: Path, small_avatar: Path, tmp_path: Path
) -> None:
    frames = 8
    features = synthetic_features(frames, 512, seed=3)
    burst = pb.GenerateRequest(
        frame_indices=list(range(frames)), features=features_message(features)
    )
    one = pb.GenerateRequest(frame_indices=[0], features=features_message(features))

    async def call(
        server: ServerProcess, request: pb.GenerateRequest
    ) -> grpc.aio.AioRpcError | int:
        async with grpc.aio.insecure_channel(server.target) as channel:
            try:  # no client deadline: only the server can expire the frames
                return len((await LipSyncStub(channel).Generate(request)).frames)
            except grpc.aio.AioRpcError as error:
                return error

    with ServerProcess(
        reference_model,
        small_avatar,
        tmp_path / "server.log",
        max_batch_size=1,
        max_queue_size=frames,
        max_queue_delay_microseconds=0,
        queue_timeout_microseconds=50_000,
    ) as server:
        # One model call takes longer than 50 ms here, so the third frame of a batch-1 queue
        # waits past the limit.
        expired = asyncio.run(call(server, burst))
        _wait_until_idle(server)
        assert _metric(server, "lipsync_queue_depth") == 0
        served = asyncio.run(call(server, one))  # its slot is free: a lone frame goes through
    assert isinstance(expired, grpc.aio.AioRpcError)
    assert expired.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "in the batch queue" in (expired.details() or "")
    assert served == 1
    assert server.process.returncode == 0


def test_cancelled_streams_free_their_queue_slots(
    reference_model: Path, small_avatar: Path, tmp_path: Path
) -> None:
    queue = 4
    features = synthetic_features(40, 512, seed=2)
    all_frames = pb.GenerateRequest(
        frame_indices=list(range(queue)), features=features_message(features[:queue])
    )

    async def scenario(server: ServerProcess) -> int:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = LipSyncStub(channel)

            # Streams the client cancels while their frames are queued or running.
            async def consume() -> None:
                async for _ in stream_frames(stub, features, chunk_frames=40):
                    pass

            tasks = [asyncio.create_task(consume()) for _ in range(2)]
            await asyncio.sleep(0.3)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(_wait_until_idle, server)
            # Every slot is free again: a whole queue's worth of frames is admitted and served.
            served = await stub.Generate(all_frames, timeout=120)
            return len(served.frames)

    with ServerProcess(
        reference_model,
        small_avatar,
        tmp_path / "server.log",
        max_batch_size=1,
        max_queue_size=queue,
        max_queue_delay_microseconds=0,
    ) as server:
        served = asyncio.run(scenario(server))
        assert _metric(server, "lipsync_queue_depth") == 0
        assert _metric(server, "lipsync_active_streams") == 0
    assert served == queue
    assert server.process.returncode == 0


def test_a_model_file_changed_after_its_build_is_refused_with_the_reason(
    reference_model: Path, small_avatar: Path, tmp_path: Path
) -> None:
    built = sha256_file(reference_model)
    tampered = tmp_path / "engine.onnx"
    tampered.write_bytes(reference_model.read_bytes() + b"\0")
    log = tmp_path / "server.log"
    server = ServerProcess(tampered, small_avatar, log, model_sha256=built)
    with pytest.raises(LipSyncError, match="did not start"):
        server.start()
    assert server.process.returncode == 2
    last_line = log.read_text().strip().splitlines()[-1]
    assert last_line.startswith(f"error: model artifact {tampered} has sha256 ")
    assert "the file changed after its build, refusing to load it" in last_line
    with ServerProcess(reference_model, small_avatar, tmp_path / "ok.log", model_sha256=built):
        pass  # the built file itself loads
