"""A liveness endpoint for a replica that waits for the Lease (kopf serves it once leading)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"state": "waiting for the lease"}'
        self.send_response(200 if self.path.split("?")[0] == self._path else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    _path = "/healthz"

    def log_message(self, format: str, *args: object) -> None:  # probes every few seconds
        return


def parse_endpoint(url: str) -> tuple[str, int, str]:
    """``http://host:port/path`` -> (host, port, path), as kopf's --liveness takes it."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or port is None:
        raise ValueError(f"{url!r} is not of the form http://HOST:PORT/PATH")
    return parts.hostname or "0.0.0.0", port, parts.path or "/"


@contextmanager
def waiting_health(url: str | None) -> Iterator[None]:
    """Serve 200 on the liveness URL while the block runs; free the port afterwards."""
    if not url:
        yield
        return
    host, port, path = parse_endpoint(url)
    handler = type("Healthy", (_Healthy,), {"_path": path})
    server = ThreadingHTTPServer((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, name="standby-health", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
