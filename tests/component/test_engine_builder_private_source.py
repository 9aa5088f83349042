"""A model behind an https:// server that wants a bearer token: ``lipsync build`` fetches it
with the token and the server's CA from the environment (as a build Job gets them from the
model's credentials Secret) and fails clearly without it; the token never reaches the result
or the logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lipsync_contract.request import SOURCE_CA_ENV, SOURCE_TOKEN_ENV
from lipsync_testbed.modelstore import private_model_store

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
    files = {"unet.onnx": reference_model.read_bytes()}
    with private_model_store(files, TOKEN, "127.0.0.1", tmp_path_factory.mktemp("pki")) as store:
        yield store.url("unet.onnx"), store.ca_file


def _build(uri: str, ca: Path, cache: Path, token: str | None) -> tuple[int, str, str]:
    env = {**os.environ, SOURCE_CA_ENV: ca.read_text()}  # trusted beside the system's CAs
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
