"""The gateway's HTTP side: WHIP/WHEP-style signalling (an SDP offer in, 201 with the answer and
a ``Location`` that DELETE ends) and the page a person opens."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import TYPE_CHECKING

import grpc
from aiohttp import web

from lipsync_gateway import DEFAULT_LATENCY_BUDGET_MS
from lipsync_gateway.session import ViewerSession
from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server.channels import ChannelSecurity, open_channel
from lipsync_server.client import LipSyncStub
from lipsync_server.speech.tts import SpeechSynthesisError

if TYPE_CHECKING:
    from lipsync_server._generated.lipsync.v1.lipsync_pb2_grpc import LipSyncAsyncStub

log = logging.getLogger(__name__)

SDP = "application/sdp"
MAX_SAY_CHARACTERS = 2000
HEALTH_TIMEOUT_S = 5.0
SESSIONS = web.AppKey("sessions", dict[str, ViewerSession])
STUB: web.AppKey[LipSyncAsyncStub] = web.AppKey("stub")
LATENCY_BUDGET_MS = web.AppKey("latency_budget_ms", int)


async def _offer(request: web.Request) -> web.Response:
    if request.content_type != SDP:
        raise web.HTTPUnsupportedMediaType(text=f"send the offer as {SDP}")
    sessions = request.app[SESSIONS]
    session_id = secrets.token_urlsafe(12)
    session = ViewerSession(
        request.app[STUB],
        lambda: sessions.pop(session_id, None),
        request.app[LATENCY_BUDGET_MS],
    )
    sessions[session_id] = session
    try:
        answer = await session.answer(await request.text())
    except ValueError as exc:
        await session.close()
        raise web.HTTPBadRequest(text=str(exc)) from None
    log.info("session %s started (%d live)", session_id, len(sessions))
    location = f"/v1/webrtc/{session_id}"
    return web.Response(status=201, text=answer, content_type=SDP, headers={"Location": location})


def _session(request: web.Request) -> ViewerSession:
    session = request.app[SESSIONS].get(request.match_info["session"])
    if session is None:
        raise web.HTTPNotFound(text="no such session")
    return session


async def _end(request: web.Request) -> web.Response:
    await _session(request).close()
    return web.Response(status=204)


async def _say(request: web.Request) -> web.Response:
    """``{"text": "..."}``: the avatar says it, lip-synced, in the viewer's audio."""
    session = _session(request)
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='send JSON: {"text": "..."}') from None
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise web.HTTPBadRequest(text='"text" must be a non-empty string')
    if len(text) > MAX_SAY_CHARACTERS:
        raise web.HTTPBadRequest(text=f'"text" is over {MAX_SAY_CHARACTERS} characters')
    try:
        seconds = await session.say(text)
    except SpeechSynthesisError as exc:
        raise web.HTTPServiceUnavailable(text=str(exc)) from None
    return web.json_response({"seconds": round(seconds, 3)}, status=202)


async def _health(request: web.Request) -> web.Response:
    """200 while the server answers (GetInfo, within 5 s), else 503 with its status: a probe for
    the gateway, and a check that the gateway's TLS and token reach the server."""
    try:
        info = await request.app[STUB].GetInfo(pb.GetInfoRequest(), timeout=HEALTH_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        raise web.HTTPServiceUnavailable(
            text=f"server: {exc.code().name}: {exc.details()}"
        ) from None
    return web.json_response({"model": info.model, "sessions": len(request.app[SESSIONS])})


async def _page(_: web.Request) -> web.Response:
    page = files("lipsync_gateway").joinpath("static/index.html").read_text()
    return web.Response(text=page, content_type="text/html")


def make_app(
    target: str,
    security: ChannelSecurity | None = None,
    latency_budget_ms: int = DEFAULT_LATENCY_BUDGET_MS,
) -> web.Application:
    """The gateway in front of the server (or Service) at ``target``; each session's frames
    come within ``latency_budget_ms`` of its speech or are skipped (0: no budget)."""
    app = web.Application()
    app[SESSIONS] = {}
    app[LATENCY_BUDGET_MS] = latency_budget_ms

    async def channel(app: web.Application) -> AsyncIterator[None]:
        async with open_channel(target, security) as opened:
            app[STUB] = LipSyncStub(opened)
            yield
            for session in list(app[SESSIONS].values()):
                await session.close()

    app.cleanup_ctx.append(channel)
    app.router.add_get("/", _page)
    app.router.add_get("/healthz", _health)
    app.router.add_post("/v1/webrtc", _offer)
    app.router.add_delete("/v1/webrtc/{session}", _end)
    app.router.add_post("/v1/webrtc/{session}/say", _say)
    return app


@asynccontextmanager
async def running_gateway(
    target: str,
    security: ChannelSecurity | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    latency_budget_ms: int = DEFAULT_LATENCY_BUDGET_MS,
) -> AsyncIterator[tuple[str, web.Application]]:
    """The gateway serving inside the running event loop (port 0: a free one); yields its base
    URL and app, and stops it on exit."""
    app = make_app(target, security, latency_budget_ms)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield f"http://{host}:{runner.addresses[0][1]}", app
    finally:
        await runner.cleanup()
