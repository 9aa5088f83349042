"""A private model store: files over HTTPS, under a CA of the test bed's own, for requests that
carry a bearer token (401 otherwise), as a company's artifact server would serve a model."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lipsync_testbed.pki import CertificateAuthority


@dataclass
class ModelStore:
    base_url: str  # https://HOST:PORT
    ca_file: Path  # the CA that signed the store's certificate
    authorized_gets: list[str] = field(default_factory=list)  # paths served with the token
    refused: int = 0  # requests without the right token

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


@contextmanager
def private_model_store(
    files: Mapping[str, bytes], token: str, host: str, pki_dir: Path
) -> Iterator[ModelStore]:
    """Serve ``files`` (name -> content) on ``https://host:<free port>/<name>``."""
    ca = CertificateAuthority("models", pki_dir)
    pair = ca.issue("models", ips=(host,))
    server = http.server.ThreadingHTTPServer((host, 0), http.server.BaseHTTPRequestHandler)
    store = ModelStore(f"https://{host}:{server.server_address[1]}", ca.pair.cert_path)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {token}":
                store.refused += 1
                self.send_error(401, "a bearer token is required")
                return
            body = files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            if self.command == "GET":
                store.authorized_gets.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        do_HEAD = do_GET  # noqa: N815 (the stdlib's name); fsspec asks for the size first

        def log_message(self, *_: object) -> None:
            pass

    server.RequestHandlerClass = Handler
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert_path, pair.key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="model-store", daemon=True)
    thread.start()
    try:
        yield store
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
