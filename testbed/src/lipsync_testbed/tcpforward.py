"""A TCP load balancer on loopback: each accepted connection goes to the next endpoint that
accepts it, round robin; with no endpoint, the connection is closed at once (a client sees
UNAVAILABLE), as behind a Service with no ready pods."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

Endpoint = tuple[str, int]
CONNECT_TIMEOUT_S = 2.0
CHUNK = 1 << 16


class TcpForwarder:
    """Forwards every accepted connection to the next of ``endpoints()`` that accepts it."""

    def __init__(
        self, endpoints: Callable[[], Sequence[Endpoint]], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._endpoints = endpoints
        self._host, self._port = host, port
        self._turn = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._connections: set[asyncio.Task[None]] = set()
        self.address: Endpoint = (host, port)
        self.forwarded = 0  # connections handed to an endpoint so far

    def start(self) -> TcpForwarder:
        self._thread = threading.Thread(target=self._run, name="tcp-forwarder", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("the forwarder did not start listening")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> TcpForwarder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def target(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(
            asyncio.start_server(self._serve, self._host, self._port)
        )
        socket = self._server.sockets[0]
        self.address = (self._host, int(socket.getsockname()[1]))
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in self._connections:
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        candidates = list(self._endpoints())
        if not candidates:
            return None
        start = next(self._turn)
        for offset in range(len(candidates)):
            host, port = candidates[(start + offset) % len(candidates)]
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout=CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                log.info("endpoint %s:%d refused a connection: %s", host, port, exc)
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            backend = await self._connect()
            if backend is None:
                return
            upstream_reader, upstream_writer = backend
            self.forwarded += 1
            try:
                await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
            finally:
                upstream_writer.close()
        finally:
            writer.close()
            if task is not None:
                self._connections.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until either side closes; then close the sink so the peer sees the end at once."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
    with contextlib.suppress(OSError):
        sink.close()
