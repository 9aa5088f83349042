"""The server pod's command line is the server's own settings type, and parses back into it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lipsync_contract.api import LipSyncModelSpec
from lipsync_operator.config import OperatorConfig
from lipsync_operator.manifests.common import Owner
from lipsync_operator.manifests.server import server_args, server_deployment, server_options
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
            "model": {"uri": "https://m.example/m/unet.onnx"},
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
            "model": {"uri": "https://m.example/m/unet.onnx"},
            "audioEncoder": {"uri": "https://m.example/m/ave.onnx"},
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


def _deployment(access: dict[str, object]) -> dict[str, Any]:
    spec = LipSyncModelSpec.model_validate(
        {
            "model": {"uri": "https://m.example/m/unet.onnx"},
            "avatar": {"uri": "pvc://a/anna"},
            "access": access,
        }
    )
    owner = Owner("anna", "team-a", "uid-1")
    return server_deployment(
        owner, spec, product="L4", product_labels=["L4"], engine=ServedEngine("sha256:1", "e.plan"),
        replicas=1, rollout_strategy={}, config=OperatorConfig(),
    )  # fmt: skip


def test_mutual_tls_and_a_token_mount_their_secrets_and_probes_use_the_health_port() -> None:
    deployment = _deployment(
        {"tls": {"secretName": "anna-tls", "clientAuth": True}, "tokenSecret": "anna-token"}
    )
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    parsed = parse_serve_args(container["args"])
    assert parsed.tls_cert_file == Path("/etc/lipsync/tls/tls.crt")
    assert parsed.tls_key_file == Path("/etc/lipsync/tls/tls.key")
    assert parsed.tls_client_ca_file == Path("/etc/lipsync/tls/ca.crt")
    assert parsed.auth_token_file == Path("/etc/lipsync/token/token")
    assert parsed.health_port == 8003
    volumes = {v["name"]: v.get("secret") for v in pod["volumes"]}
    assert volumes["tls"]["secretName"] == "anna-tls"
    assert [item["key"] for item in volumes["tls"]["items"]] == ["tls.crt", "tls.key", "ca.crt"]
    assert volumes["auth-token"]["secretName"] == "anna-token"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["tls"]["readOnly"]
    assert mounts["auth-token"]["readOnly"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 8003


def test_plain_tls_mounts_no_ca_and_no_access_mounts_nothing() -> None:
    tls_only = _deployment({"tls": {"secretName": "anna-tls"}})["spec"]["template"]["spec"]
    [volume] = [v for v in tls_only["volumes"] if v["name"] == "tls"]
    assert [item["key"] for item in volume["secret"]["items"]] == ["tls.crt", "tls.key"]
    parsed = parse_serve_args(tls_only["containers"][0]["args"])
    assert parsed.tls_client_ca_file is None
    assert parsed.auth_token_file is None
    open_pod = _deployment({})["spec"]["template"]["spec"]
    assert not [v for v in open_pod["volumes"] if "secret" in v]
    parsed = parse_serve_args(open_pod["containers"][0]["args"])
    assert parsed.tls_cert_file is None
    assert parsed.health_port == 8003


def test_the_artifacts_digests_reach_the_server_and_survive_the_deployments_annotations() -> None:
    from lipsync_operator.observed import server_deployment as observed_deployment

    spec = LipSyncModelSpec.model_validate(
        {
            "model": {"uri": "https://m.example/m/unet.onnx"},
            "audioEncoder": {"uri": "https://m.example/m/ave.onnx"},
            "avatar": {"uri": "pvc://a/anna"},
        }
    )
    engine = ServedEngine(
        "sha256:" + "1" * 64, "unet.plan", "sha256:" + "2" * 64, "ave.plan", "a" * 64, "b" * 64
    )
    owner = Owner("anna", "team-a", "uid-1")
    deployment = server_deployment(
        owner, spec, product="L4", product_labels=["L4"], engine=engine,
        replicas=1, rollout_strategy={}, config=OperatorConfig(),
    )  # fmt: skip
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    parsed = parse_serve_args(container["args"])
    assert (parsed.model_sha256, parsed.audio_encoder_sha256) == ("a" * 64, "b" * 64)
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # The Deployment remembers what it serves, digests included (kept while a new key builds).
    assert observed_deployment(deployment).engine == engine
