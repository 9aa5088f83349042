"""The client side of scale to zero: export the streams this run wants from a model.

A product scaled to zero serves no frames, so nothing on the server side can wake it. Clients
export ``lipsync_wanted_streams{namespace, lipsync_dev_model}`` (streams open or waiting for a
server) for Prometheus to scrape; the operator's KEDA trigger wakes the model on it, and the
client waits for a server meanwhile (gRPC wait-for-ready, then ``--retry-unavailable``).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Gauge, start_http_server

WANTED_STREAMS = "lipsync_wanted_streams"


def parse_model(text: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` of a LipSyncModel."""
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"--demand-model wants NAMESPACE/NAME, got {text!r}")
    return namespace, name


class DemandExporter:
    """Serves the wanted-streams gauge on ``host:port`` while the run lasts (0 when it ends)."""

    def __init__(self, model: str, port: int, host: str = "127.0.0.1") -> None:
        namespace, name = parse_model(model)
        self.registry = CollectorRegistry()
        gauge = Gauge(
            WANTED_STREAMS,
            "Streams this client wants from the model, open or waiting for a server.",
            ["namespace", "lipsync_dev_model"],
            registry=self.registry,
        )
        self._wanted = gauge.labels(namespace=namespace, lipsync_dev_model=name)
        self._port, self._host = port, host
        self._server: WSGIServer | None = None

    def want(self, streams: int) -> None:
        self._wanted.set(streams)

    def __enter__(self) -> Self:
        server, _thread = start_http_server(self._port, self._host, registry=self.registry)
        self._server = server
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._wanted.set(0)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
