"""`LipSyncAvatar`: a Pipecat frame processor after TTS that shows the bot's speech as a
lip-synced avatar rendered by a LipSync server.

Each TTS response (``TTSStartedFrame`` .. ``TTSStoppedFrame``) is one ``StreamGenerate`` call:
its audio goes to the server as it arrives, and each frame the server returns goes downstream
as an ``OutputImageRawFrame`` (RGB) followed by the speech it shows, so a transport plays lips
and sound together. The TTS audio itself is held back: what goes downstream is the audio of the
frames rendered. An ``InterruptionFrame`` (barge-in) cancels the call; frames not yet pushed
are dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server._generated.lipsync.v1.lipsync_pb2_grpc import LipSyncStub

if TYPE_CHECKING:
    from lipsync_server._generated.lipsync.v1.lipsync_pb2_grpc import LipSyncAsyncStub

# How long an EndFrame waits for the frames of the response still rendering.
END_GRACE_S = 30.0


@dataclass
class Response:
    """One TTS response: its speech (mono int16) as sent, and the call rendering it."""

    context_id: str | None
    sample_rate: int = 0
    speech: bytearray = field(default_factory=bytearray)
    requests: asyncio.Queue[pb.StreamGenerateRequest | None] = field(default_factory=asyncio.Queue)
    # The TTSStoppedFrame that ended it: pushed after its last frame.
    stopped: Frame | None = None
    task: asyncio.Task[None] | None = None

    def speech_between(self, start: int, end: int) -> bytes:
        """Samples ``[start, end)`` of the response (the server's frame tiling), zero-padded
        where the server's last frame reaches past the speech."""
        piece = bytes(self.speech[2 * start : 2 * end])
        return piece + bytes(2 * (end - start) - len(piece))


def mono_int16(frame: TTSAudioRawFrame) -> bytes:
    """The frame's samples as mono int16 (channels averaged)."""
    if frame.num_channels == 1:
        return bytes(frame.audio)
    samples = np.frombuffer(frame.audio, np.int16).reshape(-1, frame.num_channels)
    mono: np.ndarray = np.round(samples.mean(axis=1)).astype(np.int16)
    return mono.tobytes()


def rgb_image(frame: pb.Frame) -> OutputImageRawFrame:
    """A raw BGR frame from the server as Pipecat's RGB image, shown after the audio before it."""
    bgr = np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 3)
    image = OutputImageRawFrame(
        image=np.ascontiguousarray(bgr[:, :, ::-1]).tobytes(),
        size=(frame.width, frame.height),
        format="RGB",
    )
    image.sync_with_audio = True
    return image


class LipSyncAvatar(FrameProcessor):
    """Place after the TTS service: ``Pipeline([..., tts, LipSyncAvatar(target), output])``.

    ``target``: a LipSync server or Service (``host:port``) that takes speech (started with an
    audio encoder). ``model``: the served model's name, empty for the default. ``channel``:
    a channel of your own (TLS, a token), used instead of an insecure one to ``target``.
    """

    def __init__(
        self,
        target: str,
        *,
        model: str = "",
        channel: grpc.aio.Channel | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self._target = target
        self._model = model
        self._channel = channel
        self._open: Response | None = None  # taking audio
        self._rendering: list[Response] = []  # calls not finished, oldest first
        self._next_frame_index = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSStartedFrame):
            self._close_response()
            self._open = self._start_response(frame.context_id)
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSAudioRawFrame):
            self._speak(frame)
        elif isinstance(frame, TTSStoppedFrame):
            response = self._open or self._start_response(frame.context_id)
            response.stopped = frame
            self._open = response
            self._close_response()
        elif isinstance(frame, InterruptionFrame):
            await self._cancel_rendering()
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            self._close_response()
            await self._wait_rendered()
            await self.push_frame(frame, direction)
            await self._close_channel()
        elif isinstance(frame, CancelFrame):
            await self._cancel_rendering()
            await self.push_frame(frame, direction)
            await self._close_channel()
        else:
            await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]
        await self._cancel_rendering()
        await self._close_channel()

    def _stub(self) -> LipSyncAsyncStub:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self._target)
        return LipSyncStub(self._channel)

    def _start_response(self, context_id: str | None) -> Response:
        response = Response(context_id)
        output = pb.OutputOptions(encoding=pb.ENCODING_RAW_BGR)
        config = pb.StreamConfig(
            model=self._model, output=output, first_frame_index=self._next_frame_index
        )
        response.requests.put_nowait(pb.StreamGenerateRequest(config=config))
        previous = self._rendering[-1].task if self._rendering else None
        response.task = self.create_task(self._render(response, previous), name="lipsync-render")
        self._rendering.append(response)
        return response

    def _close_response(self) -> None:
        """Half-close the open response's call: the server renders the rest and ends it."""
        if self._open is not None:
            self._open.requests.put_nowait(None)
            self._open = None

    def _speak(self, frame: TTSAudioRawFrame) -> None:
        response = self._open
        if response is None:  # a TTS service that sends no TTSStartedFrame
            response = self._open = self._start_response(frame.context_id)
        if response.sample_rate and frame.sample_rate != response.sample_rate:
            raise ValueError(
                f"TTS audio changed sample rate mid-response: {response.sample_rate} Hz, "
                f"then {frame.sample_rate} Hz"
            )
        response.sample_rate = frame.sample_rate
        pcm = mono_int16(frame)
        response.speech += pcm
        chunk = pb.Pcm(sample_rate=frame.sample_rate, format=pb.PCM_FORMAT_S16LE, data=pcm)
        response.requests.put_nowait(pb.StreamGenerateRequest(pcm=chunk))

    async def _render(self, response: Response, previous: asyncio.Task[None] | None) -> None:
        """Run the response's call; once the response before it is out, push each frame and
        the speech it shows, then its TTSStoppedFrame."""

        async def requests() -> AsyncIterator[pb.StreamGenerateRequest]:
            while (request := await response.requests.get()) is not None:
                yield request

        try:
            async for reply in self._stub().StreamGenerate(requests()):
                if previous is not None:
                    await asyncio.wait({previous})
                    previous = None
                frame = reply.frame
                self._next_frame_index = frame.index + 1
                if not frame.skipped:  # a skipped frame: the previous image stays
                    await self.push_frame(rgb_image(frame))
                speech = response.speech_between(frame.audio_sample_start, frame.audio_sample_end)
                await self.push_frame(
                    TTSAudioRawFrame(
                        audio=speech,
                        sample_rate=response.sample_rate,
                        num_channels=1,
                        context_id=response.context_id,
                    )
                )
        except grpc.aio.AioRpcError as exc:
            await self.push_error(
                error_msg=f"LipSync server {self._target}: {exc.code().name}: {exc.details()}",
                exception=exc,
            )
        finally:
            if response in self._rendering:
                self._rendering.remove(response)
        if response.stopped is not None:
            await self.push_frame(response.stopped)

    async def _wait_rendered(self) -> None:
        """Wait for every call to finish (at most END_GRACE_S), then cancel what is left."""
        tasks = {r.task for r in self._rendering if r.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=END_GRACE_S)
        await self._cancel_rendering()

    async def _cancel_rendering(self) -> None:
        """Barge-in: end every call; frames not pushed yet are dropped."""
        self._open = None
        for response in list(self._rendering):
            if response.task is not None:
                await self.cancel_task(response.task)
        self._rendering.clear()

    async def _close_channel(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None
