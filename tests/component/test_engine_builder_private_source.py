"""A model behind an https:// server that wants a bearer token: ``lipsync build`` fetches it
with the token from the environment (as a build Job gets it from the model's credentials
Secret) and fails clearly without it; the token never reaches the result or the logs."""

from __future__ import annotations

import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lipsync_contract.request import SOURCE_TOKEN_ENV
from lipsync_testbed.pki import CertificateAuthority

pytestmark = pytest.mark.component

TOKEN = "private-model-token"
LIPSYNC = str(Path(sys.executable).parent / "lipsync")
FAST = ["--batch-min", "1", "--batch-opt", "1", "--batch-max", "1", "--measure-frames", "2"]


@pytest.fixture(scope="module")
def private_server(
    reference_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """``https://127.0.0.1:PORT/unet.onnx`` for requests with the token (401 otherwise), and
    the CA file that trusts it."""
    body = reference_model.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self.send_error(401, "a bearer token is required")
                return
            if self.path != "/unet.onnx":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET  # noqa: N815 (the stdlib's name); fsspec asks for the size first

        def log_message(self, *_: object) -> None:
            pass

    ca = CertificateAuthority("models", tmp_path_factory.mktemp("pki"))
    pair = ca.issue("models", ips=("127.0.0.1",))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert_path, pair.key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/unet.onnx", ca.pair.cert_path
    server.shutdown()
    thread.join()


def _build(uri: str, ca: Path, cache: Path, token: str | None) -> tuple[int, str, str]:
    env = {**os.environ, "SSL_CERT_FILE": str(ca)}
    env.pop(SOURCE_TOKEN_ENV, None)
    if token is not None:
        env[SOURCE_TOKEN_ENV] = token
    done = subprocess.run(
        [LIPSYNC, "build", "--model", uri, "--cache", str(cache), *FAST],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def test_a_private_model_builds_with_the_token_and_fails_clearly_without_it(
    private_server: tuple[str, Path], tmp_path: Path
) -> None:
    uri, ca = private_server
    code, stdout, stderr = _build(uri, ca, tmp_path / "refused", token=None)
    assert code != 0
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["state"] == "Failed"
    assert f"model {uri}: cannot fetch" in result["reason"]
    assert "401" in result["reason"]

    code, stdout, stderr = _build(uri, ca, tmp_path / "cache", token=TOKEN)
    assert code == 0, stderr[-2000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["state"] == "Ready"
    assert TOKEN not in stdout + stderr
