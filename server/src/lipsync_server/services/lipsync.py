"""The ``lipsync.v1.LipSync`` service over the data plane."""

# ruff: noqa: N802 (servicer methods carry the RPC names of the proto)

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from lipsync_contract.modelio import TensorSpec
from lipsync_server import server_version
from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server._generated.lipsync.v1 import lipsync_pb2_grpc as pb_grpc
from lipsync_server.compositor import FrameEncoding, JpegSubsampling
from lipsync_server.dataplane import DataPlane, OutputOptions, RenderedFrame
from lipsync_server.errors import InvalidRequestError
from lipsync_server.services.idle import IdleLimit
from lipsync_server.services.status import (
    check_size,
    client_identity,
    deadline_of,
    rpc_status,
    unary_rpc,
)
from lipsync_server.session import (
    AudioInput,
    FeaturesInput,
    Session,
    SessionConfig,
    WindowsInput,
    render_clip,
)
from lipsync_server.speech.pcm import PcmChunk, PcmFormat, decode_pcm
from lipsync_server.validation import decode_features, decode_windows
from lipsync_server.video import h264_codec
from lipsync_server.videoframes import H264Frames, KeyframeRequests

Context = grpc.aio.ServicerContext[object, object]

_ENCODINGS: dict[int, FrameEncoding] = {
    pb.ENCODING_UNSPECIFIED: "jpeg",
    pb.ENCODING_JPEG: "jpeg",
    pb.ENCODING_RAW_BGR: "raw-bgr",
    pb.ENCODING_H264: "h264",
}
_ENCODING_ENUMS = {
    "jpeg": pb.ENCODING_JPEG,
    "raw-bgr": pb.ENCODING_RAW_BGR,
    "h264": pb.ENCODING_H264,
}
_SUBSAMPLINGS: dict[int, JpegSubsampling] = {
    pb.JPEG_SUBSAMPLING_UNSPECIFIED: "444",
    pb.JPEG_SUBSAMPLING_444: "444",
    pb.JPEG_SUBSAMPLING_420: "420",
}
_PCM_FORMATS: dict[int, PcmFormat] = {
    pb.PCM_FORMAT_UNSPECIFIED: "s16le",
    pb.PCM_FORMAT_S16LE: "s16le",
    pb.PCM_FORMAT_F32LE: "f32le",
}


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
        pts_seconds=frame.pts_seconds,
        audio_sample_start=frame.audio_samples[0],
        audio_sample_end=frame.audio_samples[1],
        silent=frame.silent,
        keyframe=frame.keyframe,
        skipped=frame.skipped,
    )


def pcm_chunk(plane: DataPlane, pcm: pb.Pcm) -> PcmChunk:
    fmt = _PCM_FORMATS.get(pcm.format)
    if fmt is None:
        raise InvalidRequestError(f"pcm: unknown format {pcm.format}")
    samples = decode_pcm(pcm.data, fmt, plane.settings.max_pcm_chunk_bytes)
    return PcmChunk(samples, pcm.sample_rate, fmt)


def audio_input(
    plane: DataPlane, message: pb.GenerateRequest | pb.StreamGenerateRequest
) -> AudioInput | None:
    """The message's audio as a data-plane input (None when it carries none)."""
    kind = message.WhichOneof("audio")
    if kind == "features":
        return FeaturesInput(decode_features(message.features.data, plane.contract))
    if kind == "windows":
        return WindowsInput(decode_windows(message.windows.data, plane.contract))
    if kind == "pcm":
        plane.require_encoder()
        return pcm_chunk(plane, message.pcm)
    return None


def check_reply_size(plane: DataPlane, frames: int, options: OutputOptions) -> None:
    """Refuse before rendering a Generate whose raw frames could not be sent in one reply."""
    if options.encoding != "raw-bgr":
        return  # JPEG sizes are known only once encoded
    manifest = plane.store.manifest
    size = frames * manifest.width * manifest.height * 3
    limit = 2 * plane.settings.max_message_bytes  # what gRPC sends (see LipSyncServer)
    if size > limit:
        raise InvalidRequestError(
            f"{frames} raw frames of {manifest.width}x{manifest.height} are {size} bytes, over "
            f"the {limit}-byte reply limit: ask for fewer frames, or JPEG"
        )


def output_options(plane: DataPlane, output: pb.OutputOptions) -> OutputOptions:
    encoding = _ENCODINGS.get(output.encoding)
    if encoding is None:
        raise InvalidRequestError(f"unknown encoding {output.encoding}")
    subsampling = _SUBSAMPLINGS.get(output.jpeg_subsampling)
    if subsampling is None:
        raise InvalidRequestError(f"unknown jpeg_subsampling {output.jpeg_subsampling}")
    return plane.output_options(encoding, output.jpeg_quality, subsampling, output.bitrate_kbps)


def session_config(
    plane: DataPlane, first: pb.StreamGenerateRequest | None, deadline: float | None
) -> SessionConfig:
    """A stream's settings from its first message (JPEG and no budget when it has no config)."""
    if first is None or not first.HasField("config"):
        return SessionConfig(OutputOptions("jpeg", plane.settings.jpeg_quality), 0, deadline)
    config = first.config
    plane.check_model(config.model)
    budget = config.latency_budget_ms / 1e3 if config.latency_budget_ms else None
    return SessionConfig(
        output_options(plane, config.output), config.first_frame_index, deadline, budget
    )


def h264_frames(plane: DataPlane, options: OutputOptions) -> H264Frames | None:
    """A sequence's H.264 encoder when the client asked for H.264 (refused for odd sizes)."""
    if options.encoding != "h264":
        return None
    manifest = plane.store.manifest
    return H264Frames(manifest.width, manifest.height, plane.fps, options)


class LipSyncService(pb_grpc.LipSyncServicer):
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    @unary_rpc(inference=True)
    async def Generate(self, request: pb.GenerateRequest, context: Context) -> pb.GenerateResponse:
        plane = self.plane
        check_size(request, plane.settings.max_message_bytes)
        plane.check_model(request.model)
        options = output_options(plane, request.output)
        audio = audio_input(plane, request)
        if audio is None:
            raise InvalidRequestError("no audio: set features, windows or pcm")
        check_reply_size(plane, len(request.frame_indices), options)
        video = h264_frames(plane, options)
        frames = await render_clip(
            plane, list(request.frame_indices), audio, options, deadline_of(context)
        )
        if video is not None:
            frames = [await video.encode(frame) for frame in frames]
        return pb.GenerateResponse(frames=[frame_message(frame) for frame in frames])

    async def StreamGenerate(
        self, request_iterator: AsyncIterator[pb.StreamGenerateRequest], context: Context
    ) -> AsyncIterator[pb.StreamGenerateResponse]:
        plane = self.plane
        idle = IdleLimit(plane.settings.stream_idle_seconds)
        client = client_identity(context)
        async with rpc_status(plane.metrics, "StreamGenerate", context), plane.call(client):
            plane.metrics.active_streams.inc()
            try:
                messages = aiter(request_iterator)
                first = await idle.next(messages)
                config = session_config(plane, first, deadline_of(context))
                video, keyframes = h264_frames(plane, config.options), KeyframeRequests()
                inputs = self._inputs(first, messages, idle, keyframes)
                async for rendered in Session(plane, config).run(inputs):
                    idle.touch()
                    frame = rendered
                    if video is not None and not rendered.skipped:
                        frame = await video.encode(rendered, keyframes.take())
                    yield pb.StreamGenerateResponse(frame=frame_message(frame))
            finally:
                plane.metrics.active_streams.dec()

    async def _inputs(
        self,
        first: pb.StreamGenerateRequest | None,
        rest: AsyncIterator[pb.StreamGenerateRequest],
        idle: IdleLimit,
        keyframes: KeyframeRequests,
    ) -> AsyncIterator[AudioInput]:
        """The stream's messages as data-plane inputs (the first one's config already read)."""
        plane = self.plane
        if first is None:
            return
        message: pb.StreamGenerateRequest | None = first
        while message is not None:
            check_size(message, plane.settings.max_message_bytes)
            if message.HasField("config") and message is not first:
                raise InvalidRequestError("config is only allowed in the first message")
            if message.keyframe:
                keyframes.ask()
            audio = audio_input(plane, message)
            if audio is not None:
                yield audio
            elif not (message.HasField("config") or message.keyframe):
                raise InvalidRequestError("message carries neither config, audio nor keyframe")
            message = await idle.next(rest)

    @unary_rpc()
    async def GetInfo(self, request: pb.GetInfoRequest, context: Context) -> pb.GetInfoResponse:
        plane = self.plane
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
            audio_input=_audio_input_info(plane),
            h264_encoder=h264_codec(),
        )


def _tensor_info(spec: TensorSpec) -> pb.TensorInfo:
    return pb.TensorInfo(name=spec.name, dtype=spec.dtype, shape=list(spec.shape))


def _audio_input_info(plane: DataPlane) -> pb.AudioInputInfo:
    encoder, settings = plane.encoder_contract, plane.settings
    front_end = encoder.front_end
    frame_ms = 1000.0 / encoder.fps
    window_ms = 1000.0 * encoder.window / front_end.frames_per_second
    after = plane.contract.audio_window - plane.contract.audio_window_before - 1
    # The last mel window needed (frame i + after) ends window_ms after its start, plus half
    # an STFT window of look-ahead inside the last mel frame.
    stft_ms = 1000.0 * (front_end.n_fft // 2) / front_end.sample_rate
    lookahead = after * frame_ms + window_ms + stft_ms - frame_ms
    return pb.AudioInputInfo(
        pcm=plane.encoder is not None,
        sample_rate=front_end.sample_rate,
        formats=[pb.PCM_FORMAT_S16LE, pb.PCM_FORMAT_F32LE],
        fps=encoder.fps,
        max_pcm_chunk_bytes=settings.max_pcm_chunk_bytes,
        lookahead_ms=lookahead,
        silence_fast_path=settings.silence_fast_path,
        silence_threshold_dbfs=settings.silence_threshold_dbfs,
        encoder=settings.encoder_io_preset,
        encoder_input=_tensor_info(encoder.mel),
        encoder_backend="" if plane.encoder is None else plane.encoder.backend.describe().kind,
    )
