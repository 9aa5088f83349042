"""Who may call a real server process: TLS, mutual TLS and a bearer token on LipSync and KServe
v2 calls; health alone on a plaintext port; reflection off by default; certificates and tokens
rotated on disk take effect without a restart."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lipsync_bench.cli import bench
from lipsync_bench.result import BenchResult

from lipsync_gateway.app import running_gateway
from lipsync_server._generated.inference import grpc_service_pb2 as inference_pb2
from lipsync_server._generated.inference import grpc_service_pb2_grpc as inference_pb2_grpc
from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server._generated.lipsync.v1 import lipsync_pb2_grpc
from lipsync_server.audio import synthetic_features
from lipsync_server.channels import ChannelSecurity, open_channel
from lipsync_server.cli import demo
from lipsync_server.client import LipSyncStub, features_message
from lipsync_server.mux import probe
from lipsync_server.process import ServerProcess
from lipsync_testbed.pki import CertificateAuthority, KeyPair

pytestmark = pytest.mark.component

OK = grpc.StatusCode.OK
CALLS = ("Generate", "StreamGenerate", "ModelInfer")


@dataclass(frozen=True)
class Credentials:
    ca: Path
    server: KeyPair
    client: KeyPair
    stranger: KeyPair  # a client certificate of another CA
    token: Path


def _write_token(path: Path, token: str) -> Path:
    path.write_text(token + "\n")
    return path


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    root = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority("lipsync-test", root / "ca")
    other = CertificateAuthority("other", root / "other")
    return Credentials(
        ca=ca.pair.cert_path,
        server=ca.issue("server", dns=("localhost",), ips=("127.0.0.1",)),
        client=ca.issue("client"),
        stranger=other.issue("stranger"),
        token=_write_token(root / "token", "s3cret-token"),
    )


@pytest.fixture(scope="module")
def server(
    reference_model: Path,
    reference_encoder: Path,
    small_avatar: Path,
    creds: Credentials,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    with ServerProcess(
        reference_model,
        small_avatar,
        tmp_path_factory.mktemp("logs") / "server.log",
        tls_cert_file=creds.server.cert_path,
        tls_key_file=creds.server.key_path,
        tls_client_ca_file=creds.ca,
        auth_token_file=creds.token,
        max_batch_size=2,
        audio_encoder=reference_encoder,  # the demo streams speech
    ) as process:
        yield process


def _infer_request() -> inference_pb2.ModelInferRequest:
    rng = np.random.default_rng(1)
    request = inference_pb2.ModelInferRequest(model_name="lipsync")
    for name, shape in (("input", [1, 6, 320, 320]), ("audio", [1, 32, 16, 16])):
        request.inputs.add(name=name, datatype="FP32", shape=shape)
        request.raw_input_contents.append(rng.random(shape, dtype=np.float32).tobytes())
    return request


def _sync_channel(target: str, security: ChannelSecurity) -> grpc.Channel:
    # The synchronous API: an asyncio client writing a stream the server has already refused
    # may report INTERNAL ("Internal error from Core") in place of the server's status
    # (grpc/grpc#36066), and these checks are about the server's status.
    if security.tls:
        return grpc.secure_channel(target, security.credentials(), security.options())
    return grpc.insecure_channel(target)


def _outcomes(target: str, security: ChannelSecurity) -> dict[str, grpc.StatusCode]:
    """Each data-plane call once: its status code (OK when it returned its frames/outputs)."""
    features = features_message(synthetic_features(2, 512, seed=1))
    metadata = security.metadata()
    with _sync_channel(target, security) as channel:
        stub = lipsync_pb2_grpc.LipSyncStub(channel)
        inference = inference_pb2_grpc.GRPCInferenceServiceStub(channel)

        def generate() -> bool:
            request = pb.GenerateRequest(frame_indices=[0, 1], features=features)
            return len(stub.Generate(request, timeout=60, metadata=metadata).frames) == 2

        def stream() -> bool:
            requests = [
                pb.StreamGenerateRequest(config=pb.StreamConfig()),
                pb.StreamGenerateRequest(features=features),
            ]
            return len(list(stub.StreamGenerate(iter(requests), 60, metadata=metadata))) == 2

        def infer() -> bool:
            reply = inference.ModelInfer(_infer_request(), timeout=60, metadata=metadata)
            return list(reply.outputs[0].shape) == [1, 3, 320, 320]

        outcomes = {}
        for name, call in zip(CALLS, (generate, stream, infer), strict=True):
            try:
                assert call(), name
                outcomes[name] = OK
            except grpc.RpcError as error:
                outcomes[name] = error.code()
        return outcomes


def _empty_stream(target: str, security: ChannelSecurity) -> tuple[grpc.StatusCode, str]:
    """A stream of its config alone: its status and message."""
    with _sync_channel(target, security) as channel:
        config = pb.StreamGenerateRequest(config=pb.StreamConfig())
        try:
            list(lipsync_pb2_grpc.LipSyncStub(channel).StreamGenerate(iter([config]), 30))
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
    return OK, ""


def _all(code: grpc.StatusCode) -> dict[str, grpc.StatusCode]:
    return dict.fromkeys(CALLS, code)


def _mtls(creds: Credentials, token: Path | None) -> ChannelSecurity:
    """The trusted client's certificate, with ``token`` or none."""
    pair = creds.client
    return ChannelSecurity(creds.ca, pair.cert_path, pair.key_path, token_file=token)


def test_only_a_client_with_a_trusted_certificate_and_the_token_is_served(
    server: ServerProcess, creds: Credentials, tmp_path: Path
) -> None:
    def mtls(token: Path | None) -> ChannelSecurity:
        return _mtls(creds, token)

    wrong_token = _write_token(tmp_path / "wrong", "not-the-token")
    refused = {
        "plaintext": ChannelSecurity(token_file=creds.token),
        "TLS without a client certificate": ChannelSecurity(
            ca_file=creds.ca, token_file=creds.token
        ),
        "a certificate of another CA": ChannelSecurity(
            ca_file=creds.ca,
            cert_file=creds.stranger.cert_path,
            key_file=creds.stranger.key_path,
            token_file=creds.token,
        ),
    }
    for what, security in refused.items():
        assert _outcomes(server.target, security) == _all(grpc.StatusCode.UNAVAILABLE), what
    for token in (None, wrong_token):
        assert _outcomes(server.target, mtls(token)) == _all(grpc.StatusCode.UNAUTHENTICATED)
    assert _outcomes(server.target, mtls(creds.token)) == _all(OK)


def test_tritonclient_infers_over_mutual_tls_with_the_token(
    server: ServerProcess, creds: Credentials
) -> None:
    client = triton.InferenceServerClient(
        server.target,
        ssl=True,
        root_certificates=str(creds.ca),
        private_key=str(creds.client.key_path),
        certificate_chain=str(creds.client.cert_path),
    )
    headers = {"authorization": "Bearer s3cret-token"}
    assert client.is_model_ready("lipsync", headers=headers)
    request = _infer_request()
    inputs = []
    for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
        data = np.frombuffer(raw, np.float32).reshape(list(tensor.shape))
        inputs.append(triton.InferInput(tensor.name, list(tensor.shape), "FP32"))
        inputs[-1].set_data_from_numpy(data)
    result = client.infer("lipsync", inputs, headers=headers)
    assert result.as_numpy("output").shape == (1, 3, 320, 320)
    with pytest.raises(triton.InferenceServerException, match="UNAUTHENTICATED"):
        client.infer("lipsync", inputs)
    client.close()


def test_health_answers_in_plaintext_on_its_own_port_and_reflection_is_off(
    server: ServerProcess, creds: Credentials
) -> None:
    mtls = ChannelSecurity(
        ca_file=creds.ca,
        cert_file=creds.client.cert_path,
        key_file=creds.client.key_path,
        token_file=creds.token,
    )

    async def health() -> int:
        async with open_channel(server.health_target) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="lipsync.v1.LipSync"), timeout=10
            )
        return int(reply.status)

    # Any method the server does not serve answers UNIMPLEMENTED, whatever the call's shape.
    with _sync_channel(server.target, mtls) as channel:
        reflect = channel.unary_unary(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", None, None
        )
        with pytest.raises(grpc.RpcError) as refused:
            reflect(b"", timeout=10, metadata=mtls.metadata())
    status, reflection = asyncio.run(health()), refused.value.code()
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert reflection == grpc.StatusCode.UNIMPLEMENTED


def test_rotated_certificate_and_token_files_take_effect_without_a_restart(
    reference_model: Path, small_avatar: Path, tmp_path: Path
) -> None:
    first = CertificateAuthority("first", tmp_path / "first")
    second = CertificateAuthority("second", tmp_path / "second")
    served = tmp_path / "served"
    served.mkdir()
    cert, key, token = served / "tls.crt", served / "tls.key", served / "token"

    def install(pair: KeyPair) -> None:
        shutil.copyfile(pair.key_path, key)
        shutil.copyfile(pair.cert_path, cert)

    install(first.issue("server-1", ips=("127.0.0.1",)))
    _write_token(token, "first-token")
    old = ChannelSecurity(ca_file=first.pair.cert_path, token_file=tmp_path / "old-token")
    new = ChannelSecurity(ca_file=second.pair.cert_path, token_file=tmp_path / "new-token")
    _write_token(tmp_path / "old-token", "first-token")
    _write_token(tmp_path / "new-token", "second-token")
    with ServerProcess(
        reference_model, small_avatar, tmp_path / "server.log",
        tls_cert_file=cert, tls_key_file=key, auth_token_file=token, max_batch_size=2,
    ) as server:  # fmt: skip
        assert _outcomes(server.target, old) == _all(OK)
        install(second.issue("server-2", ips=("127.0.0.1",)))
        _write_token(token, "second-token")
        assert _outcomes(server.target, old) == _all(grpc.StatusCode.UNAVAILABLE)
        assert _outcomes(server.target, new) == _all(OK)
        stale_token = ChannelSecurity(ca_file=second.pair.cert_path, token_file=old.token_file)
        assert _outcomes(server.target, stale_token) == _all(grpc.StatusCode.UNAUTHENTICATED)


def test_the_bench_client_speaks_mutual_tls_with_the_token(
    server: ServerProcess, creds: Credentials, tmp_path: Path
) -> None:
    output = tmp_path / "result.json"
    args = ["run", "--target", server.target, "--no-metrics", "--frames", "3"]
    args += ["--warmup-frames", "1", "--tls-ca-file", str(creds.ca)]
    args += ["--tls-cert-file", str(creds.client.cert_path)]
    args += ["--tls-key-file", str(creds.client.key_path)]
    args += ["--auth-token-file", str(creds.token), "-o", str(output)]
    run = CliRunner().invoke(bench, args)
    assert run.exit_code == 0, run.output
    level = BenchResult.model_validate(json.loads(output.read_text())).levels[0]
    assert (level.frames_received, level.errors) == (3, {})
    missing_key = CliRunner().invoke(bench, [*args[:-6], "--tls-cert-file", str(creds.ca)])
    assert missing_key.exit_code == 2
    assert "needs both its file and its key file" in missing_key.output


def test_the_demo_speaks_to_a_running_server_over_mutual_tls_with_the_token(
    server: ServerProcess, creds: Credentials, tmp_path: Path
) -> None:
    args = ["--out", str(tmp_path), "--seconds", "0.3", "--target", server.target]
    args += ["--tls-ca-file", str(creds.ca), "--tls-cert-file", str(creds.client.cert_path)]
    args += ["--tls-key-file", str(creds.client.key_path)]
    run = CliRunner().invoke(demo, [*args, "--auth-token-file", str(creds.token)])
    assert run.exit_code == 0, run.output
    assert f"server at {server.target}" in run.output.splitlines()[-1]
    video, _ = probe(tmp_path / "demo.mp4")
    assert video.frames == 8  # ceil(0.3 s * 25)
    assert not (tmp_path / "cache").exists()  # the running server's model, not the demo's

    refused = CliRunner().invoke(demo, args)
    assert refused.exit_code == 1
    assert f"error: {server.target}: UNAUTHENTICATED" in refused.output
    local_only = CliRunner().invoke(demo, ["--out", str(tmp_path), "--tls-ca-file", str(creds.ca)])
    assert local_only.exit_code == 2
    assert "for a server named by --target" in local_only.output


def test_the_gateway_reaches_the_server_over_mutual_tls_with_the_token(
    server: ServerProcess, creds: Credentials
) -> None:
    async def health(security: ChannelSecurity) -> tuple[int, str]:
        async with (
            running_gateway(server.target, security) as (base, _),
            aiohttp.ClientSession() as http,
            http.get(f"{base}/healthz") as reply,
        ):
            return reply.status, await reply.text()

    served = asyncio.run(health(_mtls(creds, creds.token)))
    assert served == (200, '{"model": "lipsync", "sessions": 0}')
    status, text = asyncio.run(health(_mtls(creds, None)))
    assert (status, text.split(":")[:2]) == (503, ["server", " UNAUTHENTICATED"])


def test_one_client_is_held_to_its_quota_while_another_is_served(
    reference_model: Path, small_avatar: Path, tmp_path: Path
) -> None:
    ca = CertificateAuthority("quota", tmp_path / "ca")
    server_pair = ca.issue("server", ips=("127.0.0.1",))

    def client(name: str) -> ChannelSecurity:
        pair = ca.issue(name)
        return ChannelSecurity(
            ca_file=ca.pair.cert_path, cert_file=pair.cert_path, key_file=pair.key_path
        )

    async def scenario(target: str) -> tuple[list[grpc.StatusCode], str, grpc.StatusCode]:
        release = asyncio.Event()

        async def held(channel: grpc.aio.Channel) -> tuple[grpc.StatusCode, str]:
            async def requests() -> AsyncIterator[pb.StreamGenerateRequest]:
                yield pb.StreamGenerateRequest(config=pb.StreamConfig())
                await release.wait()

            try:
                async for _ in LipSyncStub(channel).StreamGenerate(requests(), timeout=60):
                    pass
            except grpc.aio.AioRpcError as error:
                return error.code(), error.details() or ""
            return OK, ""

        async with open_channel(target, client("alice")) as channel:
            streams = [asyncio.create_task(held(channel)) for _ in range(3)]
            await asyncio.sleep(1.0)  # the three are in progress
            refused, message = await asyncio.to_thread(_empty_stream, target, client("alice"))
            bob = (await asyncio.to_thread(_outcomes, target, client("bob")))["Generate"]
            release.set()
            codes = [code for code, _ in await asyncio.gather(*streams)]
        return [*codes, refused], message, bob

    with ServerProcess(
        reference_model, small_avatar, tmp_path / "server.log",
        tls_cert_file=server_pair.cert_path, tls_key_file=server_pair.key_path,
        tls_client_ca_file=ca.pair.cert_path, max_calls_per_client=3, max_batch_size=2,
    ) as server:  # fmt: skip
        codes, message, bob = asyncio.run(scenario(server.target))
    assert codes == [OK, OK, OK, grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert "cn:alice has 3 calls in progress" in message
    assert bob == OK
