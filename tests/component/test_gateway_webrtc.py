"""The WebRTC gateway with a real peer on loopback (aiortc as the viewer's browser): a spoken
microphone in, the avatar's H.264 video (the server's own packets) and audio out; sessions end
on DELETE; bad offers get 4xx; a session outlives its server through another endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from lipsync_bench.prometheus import scrape_values

from lipsync_gateway.app import SESSIONS, running_gateway
from lipsync_server.process import LOOPBACK, ServerProcess
from lipsync_server.speech.tts import synthetic_speech
from lipsync_testbed.tcpforward import TcpForwarder

pytestmark = pytest.mark.component

MIC_RATE = 48_000  # what a browser's Opus track decodes to
FRAMES = 25  # one second of video


class Microphone(MediaStreamTrack):
    """Speech in 20 ms frames, paced like a live source, then silence."""

    kind = "audio"

    def __init__(self, seconds: float) -> None:
        super().__init__()
        speech = synthetic_speech(seconds, MIC_RATE, seed=7)
        self._samples = np.round(speech * 32767).astype(np.int16)
        self._sent = 0
        self._started: float | None = None

    async def recv(self) -> av.AudioFrame:
        step = MIC_RATE // 50
        self._started = self._started or time.monotonic()
        await asyncio.sleep(max(0.0, self._started + self._sent / MIC_RATE - time.monotonic()))
        chunk = self._samples[self._sent : self._sent + step]
        chunk = np.pad(chunk, (0, step - chunk.size))
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = MIC_RATE, self._sent, Fraction(1, MIC_RATE)
        self._sent += step
        return frame


async def _offer(peer: RTCPeerConnection) -> str:
    await peer.setLocalDescription(await peer.createOffer())
    return peer.localDescription.sdp


@dataclass
class Viewer:
    """A viewer's peer with an answered session: the tracks it receives, the session's
    ``Location`` and the gateway's SDP answer."""

    peer: RTCPeerConnection
    received: dict[str, MediaStreamTrack]
    location: str
    answer: str


async def _join(http: aiohttp.ClientSession, base: str, speech_seconds: float) -> Viewer:
    """A viewer whose microphone speaks for ``speech_seconds`` opens a session."""
    peer = RTCPeerConnection()
    received: dict[str, MediaStreamTrack] = {}
    peer.on("track", lambda track: received.__setitem__(track.kind, track))
    peer.addTransceiver(Microphone(speech_seconds), direction="sendrecv")
    peer.addTransceiver("video", direction="recvonly")
    headers = {"Content-Type": "application/sdp"}
    async with http.post(f"{base}/v1/webrtc", data=await _offer(peer), headers=headers) as reply:
        assert reply.status == 201, await reply.text()
        location, answer = reply.headers["Location"], await reply.text()
    await peer.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return Viewer(peer, received, location, answer)


def test_a_viewer_speaks_and_receives_the_avatars_h264_video_and_audio(
    speech_server: ServerProcess,
) -> None:
    async def scenario() -> None:
        async with (
            running_gateway(speech_server.target) as (base, app),
            aiohttp.ClientSession() as http,
        ):
            viewer = await _join(http, base, 3.0)
            peer, received, location = viewer.peer, viewer.received, viewer.location
            video_section = viewer.answer[viewer.answer.index("m=video") :]
            assert "H264/90000" in video_section
            assert "VP8" not in video_section  # the server's packets go out as they are

            pictures = [
                await asyncio.wait_for(received["video"].recv(), 120) for _ in range(FRAMES)
            ]
            frames = [p for p in pictures if isinstance(p, av.VideoFrame)]
            assert {(f.width, f.height) for f in frames} == {(320, 240)}
            assert len(frames) == FRAMES
            stamps = [f.pts or 0 for f in frames]
            assert stamps == sorted(stamps)
            sound = await asyncio.wait_for(received["audio"].recv(), 30)
            assert isinstance(sound, av.AudioFrame)
            assert len(app[SESSIONS]) == 1

            said = f"{base}{location}/say"
            async with http.post(said, json={"text": "Hello, I am the avatar."}) as spoken:
                assert spoken.status == 202, await spoken.text()
                assert (await spoken.json())["seconds"] > 0.5
            async with http.post(said, json={"text": " "}) as empty:
                assert empty.status == 400
            more = [await asyncio.wait_for(received["video"].recv(), 120) for _ in range(FRAMES)]
            assert len(more) == FRAMES  # the stream goes on while the avatar speaks

            async with http.delete(f"{base}{location}") as ended:
                assert ended.status == 204
            assert app[SESSIONS] == {}
            async with http.delete(f"{base}{location}") as again:
                assert again.status == 404
            async with http.post(f"{base}{location}/say", json={"text": "hi"}) as gone:
                assert gone.status == 404
            await peer.close()

    asyncio.run(scenario())


def test_offers_the_gateway_cannot_serve_are_refused(speech_server: ServerProcess) -> None:
    async def scenario() -> None:
        async with (
            running_gateway(speech_server.target) as (base, app),
            aiohttp.ClientSession() as http,
        ):
            peer = RTCPeerConnection()
            peer.addTransceiver(Microphone(0.5), direction="sendrecv")  # no video section
            sdp = await _offer(peer)
            async with http.post(
                f"{base}/v1/webrtc", data=sdp, headers={"Content-Type": "text/plain"}
            ) as wrong:
                assert wrong.status == 415
            sdp_type = {"Content-Type": "application/sdp"}
            async with http.post(f"{base}/v1/webrtc", data=sdp, headers=sdp_type) as no_video:
                assert no_video.status == 400
                assert "needs an audio (microphone) and a video section" in await no_video.text()
            assert app[SESSIONS] == {}
            async with http.get(f"{base}/") as page:
                assert page.status == 200
                assert "RTCPeerConnection" in await page.text()
            await peer.close()

    asyncio.run(scenario())


def test_a_session_goes_on_through_another_endpoint_when_its_server_goes_away(
    reference_model: Path, reference_encoder: Path, small_avatar: Path, tmp_path: Path
) -> None:
    """Two servers behind one address, as a Service's endpoints: the one serving the session is
    killed, and the viewer keeps receiving frames from the other."""
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                ServerProcess(
                    reference_model,
                    small_avatar,
                    tmp_path / f"server-{i}.log",
                    audio_encoder=reference_encoder,
                    max_batch_size=4,
                )
            )
            for i in range(2)
        ]
        endpoints = [(LOOPBACK, server.grpc_port) for server in servers]
        service = stack.enter_context(TcpForwarder(lambda: endpoints))

        async def scenario() -> None:
            async with (
                running_gateway(service.target) as (base, app),
                aiohttp.ClientSession() as http,
            ):
                viewer = await _join(http, base, 30.0)
                for _ in range(FRAMES):
                    await asyncio.wait_for(viewer.received["video"].recv(), 120)
                busy = [s for s in servers if _active_streams(s) == 1]
                assert len(busy) == 1, [_active_streams(s) for s in servers]
                (gone,) = busy
                (other,) = [s for s in servers if s is not gone]
                gone.process.kill()
                video = viewer.received["video"]
                more = [await asyncio.wait_for(video.recv(), 120) for _ in range(FRAMES)]
                assert all(isinstance(p, av.VideoFrame) for p in more)
                (session,) = app[SESSIONS].values()
                assert session.reconnects >= 1
                assert _active_streams(other) == 1
                await viewer.peer.close()

        asyncio.run(scenario())


def _active_streams(server: ServerProcess) -> float:
    return scrape_values(server.metrics_url).get("lipsync_active_streams", 0.0)
