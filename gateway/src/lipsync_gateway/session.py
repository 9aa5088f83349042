"""One viewer: a WebRTC peer whose microphone streams to a lip-sync server as PCM, and who
receives the avatar's H.264 frames and the same speech back, in sync (``tracks``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import av
import grpc
import numpy as np
import soxr
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.exceptions import OperationError
from aiortc.mediastreams import MediaStreamError

from lipsync_gateway import DEFAULT_LATENCY_BUDGET_MS
from lipsync_gateway.tracks import AvatarAudio, AvatarVideo, Playout
from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server.speech.tts import speak

if TYPE_CHECKING:
    from lipsync_server._generated.lipsync.v1.lipsync_pb2_grpc import LipSyncAsyncStub

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # what the server's audio front end works at: no resampling there
# A stream that fails with one of these (the server went away) is opened again, to whichever
# endpoint of the Service answers, up to this many times in a row.
RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
RECONNECT_ATTEMPTS = 5
RECONNECT_BACKOFF_S = 0.2


def resume_index(last: pb.Frame | None, position: float) -> int:
    """The first frame index of a new call: 0 for the session's first; after a call that
    failed, the frame due at the playout's ``position`` (seconds), so the frames lost with the
    server are not waited for, and never one already sent."""
    if last is None:
        return 0
    if last.pts_seconds <= 0:
        return last.index + 1
    fps = last.index / last.pts_seconds
    return max(last.index + 1, math.ceil(position * fps))


class HeardSpeech:
    """The microphone's samples (16 kHz int16) from ``start`` on: what frames ask to play back."""

    def __init__(self) -> None:
        self.start = 0
        self._samples = np.zeros(0, np.int16)

    @property
    def end(self) -> int:
        """How many samples were heard in all."""
        return self.start + self._samples.size

    def append(self, samples: np.ndarray) -> None:
        self._samples = np.concatenate([self._samples, samples])

    def take(self, start: int, end: int) -> np.ndarray:
        """Samples ``[start, end)``; those before ``end`` are not needed again."""
        piece = self._samples[max(0, start - self.start) : max(0, end - self.start)].copy()
        drop = min(self._samples.size, max(0, end - self.start))
        self._samples, self.start = self._samples[drop:], self.start + drop
        return piece


class SpokenText:
    """Speech queued by ``say``: it takes the microphone's place, chunk for chunk, so it goes
    to the server at the microphone's live pace and plays back like heard speech."""

    def __init__(self) -> None:
        self._queued = np.zeros(0, np.int16)

    @property
    def seconds_left(self) -> float:
        return self._queued.size / SAMPLE_RATE

    def add(self, samples: np.ndarray) -> None:
        self._queued = np.concatenate([self._queued, samples])

    def instead_of(self, heard: np.ndarray) -> np.ndarray:
        """The next ``heard.size`` samples of queued speech (zero-padded at its end), or
        ``heard`` itself when nothing is queued."""
        if not self._queued.size:
            return heard
        piece, self._queued = self._queued[: heard.size], self._queued[heard.size :]
        return np.pad(piece, (0, heard.size - piece.size))


class ViewerSession:
    """A peer connection and the gRPC stream behind it; ``on_end`` runs once when it ends."""

    def __init__(
        self,
        stub: LipSyncAsyncStub,
        on_end: Callable[[], object],
        latency_budget_ms: int = DEFAULT_LATENCY_BUDGET_MS,
    ) -> None:
        self._stub = stub
        self._on_end = on_end
        self._latency_budget_ms = latency_budget_ms
        self.peer = RTCPeerConnection()
        self._clock = Playout()
        self.video = AvatarVideo(self._clock)
        self.audio = AvatarAudio(self._clock, SAMPLE_RATE)
        self._heard = HeardSpeech()
        self._spoken = SpokenText()
        self._task: asyncio.Task[None] | None = None
        self._ended = False
        self._last_frame: pb.Frame | None = None  # the last one any call returned
        self._call_frames = 0  # frames the current call returned
        self.reconnects = 0

        @self.peer.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self._task is None:
                self._task = asyncio.create_task(self._serve(track))

        @self.peer.on("connectionstatechange")
        async def on_state() -> None:
            if self.peer.connectionState in ("failed", "closed"):
                await self.close()

    async def answer(self, offer_sdp: str) -> str:
        """Take the viewer's offer (a microphone to send, video and audio to receive); the
        answer sends H.264 video, so the server's frames go out as they are."""
        speech = self.peer.addTransceiver(self.audio, direction="sendrecv")
        avatar = self.peer.addTransceiver(self.video, direction="sendonly")
        capabilities = RTCRtpSender.getCapabilities("video").codecs
        avatar.setCodecPreferences([c for c in capabilities if c.mimeType == "video/H264"])
        # aiortc asks its own encoder for a keyframe on a viewer's PLI/FIR; ours is the server's.
        avatar.sender._send_keyframe = self.video.keyframe_wanted.set  # type: ignore[method-assign]
        try:
            await self.peer.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except (ValueError, OperationError) as exc:
            raise ValueError(f"cannot use the offer: {exc}") from None
        if speech.mid is None or avatar.mid is None:
            raise ValueError("the offer needs an audio (microphone) and a video section")
        await self.peer.setLocalDescription(await self.peer.createAnswer())
        return self.peer.localDescription.sdp

    async def _requests(
        self, microphone: MediaStreamTrack, first_frame_index: int
    ) -> AsyncIterator[pb.StreamGenerateRequest]:
        output = pb.OutputOptions(encoding=pb.ENCODING_H264)
        config = pb.StreamConfig(
            output=output,
            first_frame_index=first_frame_index,
            latency_budget_ms=self._latency_budget_ms,
        )
        yield pb.StreamGenerateRequest(config=config)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        while True:
            try:
                frame = await microphone.recv()
            except MediaStreamError:
                return  # the viewer hung up: the server renders what it has, then ends
            if self.video.keyframe_wanted.is_set():
                self.video.keyframe_wanted.clear()
                yield pb.StreamGenerateRequest(keyframe=True)
            assert isinstance(frame, av.AudioFrame)
            for piece in resampler.resample(frame):
                samples = self._spoken.instead_of(piece.to_ndarray().reshape(-1).astype(np.int16))
                self._heard.append(samples)
                pcm = pb.Pcm(sample_rate=SAMPLE_RATE, format=pb.PCM_FORMAT_S16LE,
                             data=samples.tobytes())  # fmt: skip
                yield pb.StreamGenerateRequest(pcm=pcm)

    async def _serve(self, microphone: MediaStreamTrack) -> None:
        """Stream until the viewer hangs up; a server that goes away is replaced by another
        endpoint of the target, the session going on where the playout is."""
        failures = 0
        try:
            while True:
                try:
                    await self._stream(microphone)
                    return
                except grpc.aio.AioRpcError as exc:
                    failures = 0 if self._call_frames else failures
                    if exc.code() not in RECONNECT_CODES or failures >= RECONNECT_ATTEMPTS:
                        log.warning("the server ended the stream: %s %s",
                                    exc.code().name, exc.details())  # fmt: skip
                        return
                    failures += 1
                    self.reconnects += 1
                    log.info("the server went away (%s); reconnecting", exc.details())
                    await asyncio.sleep(RECONNECT_BACKOFF_S * 2 ** (failures - 1))
        finally:
            self.video.end()
            self.audio.end()

    async def _stream(self, microphone: MediaStreamTrack) -> None:
        """One StreamGenerate call. Its frames continue the session's numbering from the
        presentation time playing now, and its samples are counted from what was heard when it
        started."""
        first = resume_index(self._last_frame, self._clock.position())
        heard_before = self._heard.end
        self._call_frames = 0
        async for response in self._stub.StreamGenerate(self._requests(microphone, first)):
            frame = self._last_frame = response.frame
            self._call_frames += 1
            if not frame.skipped:  # a skipped frame: the previous one stays on screen
                self.video.push(frame.pts_seconds, frame.data)
            speech = self._heard.take(
                heard_before + frame.audio_sample_start, heard_before + frame.audio_sample_end
            )
            self.audio.push(round(frame.pts_seconds * SAMPLE_RATE), speech)

    async def say(self, text: str) -> float:
        """Speak ``text`` with eSpeak NG (the demo's voice) in the microphone's place; returns
        its length in seconds. Raises SpeechSynthesisError when eSpeak NG cannot run here."""
        samples, rate = await asyncio.to_thread(speak, text)
        speech = soxr.resample(samples, rate, SAMPLE_RATE)
        self._spoken.add(np.clip(np.round(speech * 32767), -32768, 32767).astype(np.int16))
        return float(speech.size / SAMPLE_RATE)

    async def close(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.peer.close()
        self._on_end()
