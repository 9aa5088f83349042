"""The ``lipsync.v1.LipSync`` service over the data plane."""

# ruff: noqa: N802 (servicer methods carry the RPC names of the proto)

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import numpy as np

from lipsync_core.contract import TensorSpec
from lipsync_server import server_version
from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server._generated.lipsync.v1 import lipsync_pb2_grpc as pb_grpc
from lipsync_server.audio import StreamWindower, build_windows
from lipsync_server.compositor import FrameEncoding
from lipsync_server.dataplane import DataPlane, OutputOptions, RenderedFrame
from lipsync_server.errors import InvalidRequestError
from lipsync_server.services.status import check_size, deadline_of, rpc_status
from lipsync_server.validation import check_frame_indices, decode_features, decode_windows

Context = grpc.aio.ServicerContext[object, object]

_ENCODINGS: dict[int, FrameEncoding] = {
    pb.ENCODING_UNSPECIFIED: "jpeg",
    pb.ENCODING_JPEG: "jpeg",
    pb.ENCODING_RAW_BGR: "raw-bgr",
}
_ENCODING_ENUMS = {"jpeg": pb.ENCODING_JPEG, "raw-bgr": pb.ENCODING_RAW_BGR}


def frame_message(frame: RenderedFrame) -> pb.Frame:
    t = frame.timings
    return pb.Frame(
        index=frame.index,
        avatar_frame=frame.avatar_frame,
        width=frame.width,
        height=frame.height,
        encoding=_ENCODING_ENUMS[frame.encoding],
        data=frame.data,
        timings=pb.FrameTimings(
            queue_ms=t.queue_s * 1e3,
            preprocess_ms=t.preprocess_s * 1e3,
            infer_ms=t.infer_s * 1e3,
            postprocess_ms=t.postprocess_s * 1e3,
            encode_ms=t.encode_s * 1e3,
            total_ms=t.total_s * 1e3,
            batch_size=t.batch_size,
        ),
    )


def output_options(plane: DataPlane, output: pb.OutputOptions) -> OutputOptions:
    encoding = _ENCODINGS.get(output.encoding)
    if encoding is None:
        raise InvalidRequestError(f"unknown encoding {output.encoding}")
    return plane.output_options(encoding, output.jpeg_quality)


class LipSyncService(pb_grpc.LipSyncServicer):
    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    async def Generate(self, request: pb.GenerateRequest, context: Context) -> pb.GenerateResponse:
        plane = self._plane
        async with rpc_status(plane.metrics, "Generate", context), plane.call():
            check_size(request, plane.settings.max_message_bytes)
            plane.check_model(request.model)
            options = output_options(plane, request.output)
            indices = list(request.frame_indices)
            audio = request.WhichOneof("audio")
            if audio == "features":
                features = decode_features(request.features.data, plane.contract)
                check_frame_indices(
                    indices, plane.settings.max_frames_per_request, features.shape[0]
                )
                windows = build_windows(features, indices, plane.contract)
            elif audio == "windows":
                windows = decode_windows(request.windows.data, plane.contract)
                check_frame_indices(indices, plane.settings.max_frames_per_request, None)
                if windows.shape[0] != len(indices):
                    raise InvalidRequestError(
                        f"{windows.shape[0]} audio windows for {len(indices)} frame_indices"
                    )
            else:
                raise InvalidRequestError("no audio: set features or windows")
            frames = await plane.render_many(indices, windows, options, deadline_of(context))
            return pb.GenerateResponse(frames=[frame_message(frame) for frame in frames])
        raise AssertionError("unreachable")  # rpc_status aborts on every error

    async def StreamGenerate(
        self, request_iterator: AsyncIterator[pb.StreamGenerateRequest], context: Context
    ) -> AsyncIterator[pb.StreamGenerateResponse]:
        plane = self._plane
        async with rpc_status(plane.metrics, "StreamGenerate", context), plane.call():
            plane.metrics.active_streams.inc()
            try:
                stream = _Stream(plane, deadline_of(context))
                async for frame in stream.run(request_iterator):
                    yield pb.StreamGenerateResponse(frame=frame_message(frame))
            finally:
                plane.metrics.active_streams.dec()

    async def GetInfo(self, request: pb.GetInfoRequest, context: Context) -> pb.GetInfoResponse:
        plane = self._plane
        async with rpc_status(plane.metrics, "GetInfo", context):
            info, contract, settings = plane.backend_info, plane.contract, plane.settings
            manifest = plane.store.manifest
            return pb.GetInfoResponse(
                model=plane.model_name,
                backend=info.kind,
                provider=info.provider,
                precision=info.precision,
                device=info.device,
                backend_version=info.version,
                avatar=pb.AvatarInfo(
                    name=manifest.name,
                    frames=manifest.frame_count,
                    width=manifest.width,
                    height=manifest.height,
                    fps=manifest.fps,
                ),
                image=_tensor_info(contract.image),
                audio=_tensor_info(contract.audio),
                output=_tensor_info(contract.output),
                audio_feature_dim=contract.audio_feature_dim,
                audio_window=contract.audio_window,
                audio_window_before=contract.audio_window_before,
                max_batch_size=settings.max_batch_size,
                max_queue_delay_microseconds=settings.max_queue_delay_microseconds,
                max_queue_size=settings.max_queue_size,
                instances=settings.instances,
                server_version=server_version(),
            )
        raise AssertionError("unreachable")


def _tensor_info(spec: TensorSpec) -> pb.TensorInfo:
    return pb.TensorInfo(name=spec.name, dtype=spec.dtype, shape=list(spec.shape))


_Pending = asyncio.Task[RenderedFrame] | Exception | None


class _Stream:
    """One StreamGenerate call: a reader turns messages into frame tasks (at most
    ``inflight_per_stream`` at once), the caller awaits them in order."""

    def __init__(self, plane: DataPlane, deadline: float | None) -> None:
        self._plane = plane
        self._deadline = deadline
        self._pending: asyncio.Queue[_Pending] = asyncio.Queue()
        self._slots = asyncio.Semaphore(plane.settings.inflight_per_stream)
        self._options = OutputOptions("jpeg", plane.settings.jpeg_quality)
        self._first_index = 0
        self._sent = 0

    async def run(
        self, requests: AsyncIterator[pb.StreamGenerateRequest]
    ) -> AsyncIterator[RenderedFrame]:
        reader = asyncio.create_task(self._read(requests))
        try:
            while (item := await self._pending.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                frame = await item
                self._slots.release()
                yield frame
        finally:
            reader.cancel()
            while not self._pending.empty():
                leftover = self._pending.get_nowait()
                if isinstance(leftover, asyncio.Task):
                    leftover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, requests: AsyncIterator[pb.StreamGenerateRequest]) -> None:
        plane = self._plane
        windower: StreamWindower | None = None
        mode: str | None = None
        first = True
        try:
            async for message in requests:
                check_size(message, plane.settings.max_message_bytes)
                if message.HasField("config"):
                    if not first:
                        raise InvalidRequestError("config is only allowed in the first message")
                    plane.check_model(message.config.model)
                    self._options = output_options(plane, message.config.output)
                    self._first_index = message.config.first_frame_index
                first = False
                audio = message.WhichOneof("audio")
                if audio is None:
                    if message.HasField("config"):
                        continue
                    raise InvalidRequestError("message carries neither config nor audio")
                if mode is not None and audio != mode:
                    raise InvalidRequestError("a stream sends either features or windows, not both")
                mode = audio
                if audio == "features":
                    windower = windower or StreamWindower(plane.contract)
                    for position, window in windower.push(
                        decode_features(message.features.data, plane.contract)
                    ):
                        await self._submit(position, window)
                else:
                    for window in decode_windows(message.windows.data, plane.contract):
                        await self._submit(self._sent, window)
            if windower is not None:
                for position, window in windower.finish():
                    await self._submit(position, window)
            await self._pending.put(None)
        except Exception as exc:
            await self._pending.put(exc)

    async def _submit(self, position: int, window: np.ndarray) -> None:
        await self._slots.acquire()
        self._plane.admit(1)
        index = self._first_index + position
        self._sent += 1
        task = asyncio.create_task(self._plane.render(index, window, self._options, self._deadline))
        await self._pending.put(task)
