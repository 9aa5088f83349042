"""The asyncio gRPC load generator: N concurrent streams (or unary callers) against one or more
LipSync endpoints, closed loop (one frame in flight per stream) or open loop (a fixed total
arrival rate, latency measured from each frame's scheduled send time so a slow server cannot hide
its queueing), bounded by a duration or a frame count.

Every frame sent ends up either received or counted as an error under the gRPC status code that
lost it, so ``frames_sent == frames_received + sum(errors)`` always holds. With
``retry_unavailable`` a stream whose call fails with UNAVAILABLE (a server pod going away in a
rollout) opens a new call that asks again for the frames it had in flight: those are counted under
``retried``, not lost, and the largest gap between two frames of one stream is recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from lipsync_bench.result import Api, Mode
from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server._generated.lipsync.v1 import lipsync_pb2_grpc as pb_grpc
from lipsync_server.channels import ChannelSecurity, open_channel

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 2**20
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # A server that went away (a rollout) is dialled again within a second, not after minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# A stream's frame indices start far apart so streams composite different avatar frames.
STREAM_INDEX_STRIDE = 100_000
DRAIN_CANCELLED = "CANCELLED"
RETRYABLE = frozenset({"UNAVAILABLE"})
ENCODINGS = {
    "jpeg": pb.OutputOptions(encoding=pb.ENCODING_JPEG),
    "jpeg-420": pb.OutputOptions(
        encoding=pb.ENCODING_JPEG, jpeg_subsampling=pb.JPEG_SUBSAMPLING_420
    ),
    "raw": pb.OutputOptions(encoding=pb.ENCODING_RAW_BGR),
    "h264": pb.OutputOptions(encoding=pb.ENCODING_H264),  # each stream one sequence
}


@dataclass(frozen=True)
class LevelPlan:
    streams: int
    api: Api = "stream"
    mode: Mode = "closed"
    rate_fps: float | None = None
    duration_s: float | None = None
    frames: int | None = None
    frames_per_request: int = 1
    encoding: str = "jpeg"
    drain_timeout_s: float = 60.0
    time_limit_s: float = 3600.0
    retry_unavailable: bool = False


@dataclass
class Tally:
    """Counts of one level, shared by its streams (one event loop: no locks)."""

    plan: LevelPlan
    on_frames: Callable[[int], None] = lambda n: None
    sent: int = 0
    received: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)
    max_gap_ms: float = 0.0
    last_frame_at: dict[int, float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    timings: list[pb.FrameTimings] = field(default_factory=list)
    per_stream: Counter[int] = field(default_factory=Counter)
    first_send: float | None = None
    last_receive: float | None = None
    deadline: float | None = None

    def take(self, wanted: int) -> int:
        """How many more frames may be sent now (0: the level is over)."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return 0
        if self.plan.frames is not None:
            wanted = min(wanted, self.plan.frames - self.sent)
        wanted = max(wanted, 0)
        if wanted:
            self.sent += wanted
            if self.first_send is None:
                self.first_send = time.monotonic()
        return wanted

    def receive(self, stream: int, sent_at: float, frame: pb.Frame) -> None:
        now = time.monotonic()
        previous = self.last_frame_at.get(stream)
        if previous is not None:
            self.max_gap_ms = max(self.max_gap_ms, (now - previous) * 1000.0)
        self.last_frame_at[stream] = now
        self.received += 1
        self.per_stream[stream] += 1
        self.latencies_ms.append((now - sent_at) * 1000.0)
        self.timings.append(frame.timings)
        self.last_receive = now
        self.on_frames(1)

    def lose(self, frames: int, code: str) -> None:
        if frames > 0:
            self.errors[code] += frames
            self.on_frames(frames)


class Payloads:
    """Pre-built audio windows (float32 bytes, the model's audio layout), reused round-robin."""

    def __init__(self, audio_shape: Sequence[int], count: int = 16, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        size = int(np.prod(audio_shape))
        self._windows = [
            np.clip(rng.normal(0.0, 1.0, size), -5, 5).astype("<f4").tobytes() for _ in range(count)
        ]

    def windows(self, start: int, frames: int) -> bytes:
        n = len(self._windows)
        return b"".join(self._windows[(start + i) % n] for i in range(frames))


def _code_name(exc: grpc.aio.AioRpcError) -> str:
    code = exc.code()
    return code.name if code is not None else "UNKNOWN"


class _Pacer:
    """Open loop: the scheduled send time of each of a stream's frames; closed loop: now."""

    def __init__(self, plan: LevelPlan, stream: int) -> None:
        open_loop = plan.mode == "open" and plan.rate_fps
        self._interval = plan.streams / plan.rate_fps if open_loop and plan.rate_fps else 0.0
        self._next = time.monotonic() + self._interval * stream / max(plan.streams, 1)

    async def wait(self) -> float:
        if not self._interval:
            return time.monotonic()
        scheduled = self._next
        self._next += self._interval
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return scheduled


async def _stream_call(
    stub: pb_grpc.LipSyncAsyncStub,
    stream: int,
    first_index: int,
    *,
    payloads: Payloads,
    tally: Tally,
    pacer: _Pacer,
    owed: int = 0,
) -> tuple[int, bool, int]:
    """One StreamGenerate call until the level ends or the call fails. Its first ``owed`` frames
    are asked again (a previous call lost them). Returns the index to go on from, whether the
    stream should go on with a new call, and how many of the frames from that index it owes."""
    plan = tally.plan
    # Retrying: a new call waits for the channel to reconnect instead of failing at once.
    call = stub.StreamGenerate(None, wait_for_ready=plan.retry_unavailable or None)
    in_flight: dict[int, float] = {}
    window = asyncio.Semaphore(1) if plan.mode == "closed" else None
    config = pb.StreamConfig(output=ENCODINGS[plan.encoding], first_frame_index=first_index)
    next_index = first_index

    async def write() -> None:
        nonlocal next_index, config
        while True:
            if window is not None:
                await window.acquire()
            if next_index < first_index + owed:
                scheduled = time.monotonic()  # sent again: latency counts from the resend
            else:
                scheduled = await pacer.wait()
                if not tally.take(1):
                    break
            in_flight[next_index] = scheduled
            request = pb.StreamGenerateRequest(
                config=config, windows=pb.AudioWindows(data=payloads.windows(next_index, 1))
            )
            config = None  # type: ignore[assignment]  # only the first message carries it
            next_index += 1
            await call.write(request)
        await call.done_writing()

    async def read() -> None:
        while True:
            response = await call.read()
            if not isinstance(response, pb.StreamGenerateResponse):
                return  # end of the stream
            sent_at = in_flight.pop(response.frame.index, None)
            if sent_at is None:
                log.warning("stream %d: unexpected frame index %d", stream, response.frame.index)
                continue
            tally.receive(stream, sent_at, response.frame)
            if window is not None:
                window.release()

    writer = asyncio.create_task(write())
    writer.add_done_callback(lambda task: task.cancelled() or task.exception())
    try:
        await read()
        await writer
        tally.lose(len(in_flight), "MISSING")  # the call ended OK without these frames
        return next_index, False, 0
    except grpc.aio.AioRpcError as exc:
        writer.cancel()
        code = _code_name(exc)
        log.debug("stream %d failed: %s", stream, code)
        if plan.retry_unavailable and code in RETRYABLE and in_flight:
            tally.retried[code] += len(in_flight)
            resume = min(in_flight)
            return resume, True, next_index - resume
        tally.lose(len(in_flight), code)
        return next_index, True, 0
    except asyncio.CancelledError:
        writer.cancel()
        call.cancel()
        tally.lose(len(in_flight), DRAIN_CANCELLED)
        raise


async def _stream_worker(
    stub: pb_grpc.LipSyncAsyncStub, stream: int, payloads: Payloads, tally: Tally
) -> None:
    pacer = _Pacer(tally.plan, stream)
    index = stream * STREAM_INDEX_STRIDE
    go_on, owed = True, 0
    while go_on:
        index, go_on, owed = await _stream_call(
            stub, stream, index, payloads=payloads, tally=tally, pacer=pacer, owed=owed
        )
        if go_on:
            await asyncio.sleep(0.05)  # a failed call: back off briefly, then a new stream


async def _unary_call(
    stub: pb_grpc.LipSyncAsyncStub,
    stream: int,
    index: int,
    *,
    scheduled: float,
    payloads: Payloads,
    tally: Tally,
    unsettled: dict[int, int],
) -> None:
    """One Generate call for the frames ``unsettled[index]``; settles them (pops the entry)."""
    plan = tally.plan
    frames = unsettled[index]
    request = pb.GenerateRequest(
        frame_indices=range(index, index + frames),
        windows=pb.AudioWindows(data=payloads.windows(index, frames)),
        output=ENCODINGS[plan.encoding],
    )
    try:
        response = await stub.Generate(request, timeout=plan.drain_timeout_s)
    except grpc.aio.AioRpcError as exc:
        tally.lose(unsettled.pop(index), _code_name(exc))
        return
    del unsettled[index]
    for frame in response.frames:
        tally.receive(stream, scheduled, frame)
    tally.lose(frames - len(response.frames), "MISSING")


async def _unary_worker(
    stub: pb_grpc.LipSyncAsyncStub, stream: int, payloads: Payloads, tally: Tally
) -> None:
    plan = tally.plan
    pacer = _Pacer(plan, stream)
    index = stream * STREAM_INDEX_STRIDE
    unsettled: dict[int, int] = {}  # first frame index of a call -> its frames not yet counted
    pending: set[asyncio.Task[None]] = set()
    try:
        while True:
            scheduled = await pacer.wait()
            frames = tally.take(plan.frames_per_request)
            if not frames:
                break
            unsettled[index] = frames
            job = _unary_call(
                stub,
                stream,
                index,
                scheduled=scheduled,
                payloads=payloads,
                tally=tally,
                unsettled=unsettled,
            )
            index += frames
            if plan.mode == "closed":
                await job
            else:
                task = asyncio.create_task(job)
                pending.add(task)
                task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
    finally:
        for task in pending:
            task.cancel()
        for frames in unsettled.values():
            tally.lose(frames, DRAIN_CANCELLED)
        unsettled.clear()


async def run_level(
    channels: Sequence[grpc.aio.Channel],
    plan: LevelPlan,
    audio_shape: Sequence[int],
    on_frames: Callable[[int], None] = lambda n: None,
) -> Tally:
    """Run one level to its end (duration or frame budget), then wait up to
    ``plan.drain_timeout_s`` for frames still in flight; those left are counted as cancelled."""
    if plan.duration_s is None and plan.frames is None:
        raise ValueError("a level needs a duration or a frame count")
    tally = Tally(plan=plan, on_frames=on_frames)
    payloads = Payloads(audio_shape)
    stubs = [pb_grpc.LipSyncStub(channel) for channel in channels]
    worker = _stream_worker if plan.api == "stream" else _unary_worker
    if plan.duration_s is not None:
        tally.deadline = time.monotonic() + plan.duration_s
    tasks = [
        asyncio.create_task(worker(stubs[i % len(stubs)], i, payloads, tally))
        for i in range(plan.streams)
    ]
    limit = plan.drain_timeout_s + (
        plan.duration_s if plan.duration_s is not None else plan.time_limit_s
    )
    done, pending = await asyncio.wait(tasks, timeout=limit)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return tally


def open_channels(
    targets: Sequence[str], security: ChannelSecurity | None = None
) -> list[grpc.aio.Channel]:
    return [open_channel(target, security, CHANNEL_OPTIONS) for target in targets]


async def get_info(channel: grpc.aio.Channel, timeout_s: float = 30.0) -> pb.GetInfoResponse:
    stub = pb_grpc.LipSyncStub(channel)
    return await stub.GetInfo(pb.GetInfoRequest(), timeout=timeout_s, wait_for_ready=True)
