"""The server pod's command line is the server's own settings type, and parses back into it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lipsync_contract.api import LipSyncModelSpec
from lipsync_operator.config import OperatorConfig
from lipsync_operator.manifests.server import server_args, server_options
from lipsync_operator.observed import ServedEngine
from lipsync_server.cli import serve
from lipsync_server.config import ServerSettings, load_settings

pytestmark = pytest.mark.unit


def parse_serve_args(args: list[str]) -> ServerSettings:
    """What `lipsync serve ARGS` would run with: the server's click command, then its loader."""
    assert args[0] == "serve"
    context = serve.make_context("serve", args[1:])
    flags = {k: v for k, v in context.params.items() if v is not None and k != "config_file"}
    return load_settings(None, flags)


@pytest.fixture(autouse=True)
def _no_server_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LIPSYNC_"):
            monkeypatch.delenv(name)


def test_generated_arguments_parse_back_into_the_same_settings() -> None:
    spec = LipSyncModelSpec.model_validate(
        {
            "model": {"uri": "s3://m/unet.onnx"},
            "avatar": {"uri": "pvc://avatars/anna"},
            "sharing": "exclusive",
            "replicasPerGPU": 3,
            "batching": {"maxBatch": 16, "maxQueueDelayMicroseconds": 2500},
        }
    )
    config = OperatorConfig(backend="onnxruntime-cpu", server_listen_address="$(POD_IP)")
    engine = ServedEngine("sha256:" + "1" * 64, "engine-abc.plan")
    expected = server_options(spec, "anna", engine, config)
    parsed = parse_serve_args(server_args(spec, "anna", engine, config))
    assert parsed.model_dump() == expected.model_dump()
    assert parsed.backend == "onnxruntime-cpu"
    assert parsed.host == "$(POD_IP)"
    assert parsed.model == Path("/engine/engine-abc.plan")
    assert parsed.instances == 3
    assert parsed.max_batch_size == 16
    assert parsed.max_queue_delay_microseconds == 2500
    assert parsed.audio_encoder is None


def test_speech_servers_get_the_audio_encoder_engine_and_its_preset() -> None:
    spec = LipSyncModelSpec.model_validate(
        {
            "model": {"uri": "s3://m/unet.onnx"},
            "audioEncoder": {"uri": "s3://m/ave.onnx"},
            "avatar": {"uri": "pvc://avatars/anna"},
        }
    )
    config = OperatorConfig(backend="tensorrt")
    engine = ServedEngine("sha256:" + "1" * 64, "unet.plan", "sha256:" + "2" * 64, "ave.plan")
    parsed = parse_serve_args(server_args(spec, "anna", engine, config))
    assert parsed.model == Path("/engine/unet.plan")
    assert parsed.audio_encoder == Path("/audio-encoder/ave.plan")
    assert (parsed.encoder_io_preset, parsed.encoder_backend) == ("ave", "tensorrt")


def test_every_kind_of_setting_round_trips() -> None:
    options = ServerSettings(
        model=Path("/engine/e.plan"),
        avatar=Path("/avatar"),
        backend="tensorrt",
        preferred_batch_size=(2, 4),
        warmup=False,
        shutdown_grace_seconds=12.5,
        log_level="DEBUG",
    )
    parsed = parse_serve_args(["serve", *options.to_args()])
    assert parsed.model_dump() == options.model_dump()
