"""The operator as users install it: the chart's two replicas with leader election, and the
example model served by `lipsync serve` containers on two real nodes of two GPU products."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes import client

from lipsync_server._generated.lipsync.v1 import lipsync_pb2
from lipsync_server.audio import synthetic_features
from lipsync_server.channels import ChannelSecurity, open_channel
from lipsync_server.client import LipSyncStub, features_message
from lipsync_testbed import GpuSpec, LocalCluster, NodeSpec, operatorchart, wait_for
from lipsync_testbed.lsm import (
    engines,
    jobs,
    nodes_of,
    patch_spec,
    server_pods,
    status,
    wait_phase,
    wait_serving,
)
from lipsync_testbed.nodebed import REAL_NODE, REAL_NODE_PRODUCT, added_real_nodes
from lipsync_testbed.operatorchart import OperatorBed
from lipsync_testbed.pki import CertificateAuthority, KeyPair
from lipsync_testbed.portforward import port_forward
from lipsync_testbed.versions import repo_root

pytestmark = pytest.mark.cluster

EXAMPLE = repo_root() / "examples" / "lipsyncmodel.yaml"
BUILD_TIMEOUT = 600.0  # two ORT CPU builds at once on a shared 2-core machine
HANDOVER_S = 30.0
H100 = "NVIDIA-H100-80GB-HBM3"
H100_NODE = NodeSpec(
    name="h100-0",
    pool="h100",
    gpu=GpuSpec(product=H100, count=1, memory_mib=81559, compute_major=9, compute_minor=0),
)
TOKEN = "anna-bearer-token"
T = TypeVar("T")


@pytest.fixture(scope="module", autouse=True)
def h100_node(node_cluster: LocalCluster) -> Iterator[str]:
    """A second real node, of another product than the test bed's own."""
    with added_real_nodes(node_cluster, H100_NODE):
        yield H100_NODE.name


def _ready_endpoints(bed: OperatorBed, service: str) -> list[str]:
    slices = client.DiscoveryV1Api(bed.cluster.api_client).list_namespaced_endpoint_slice(
        bed.namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return [
        address
        for item in slices.items
        for endpoint in item.endpoints or []
        if endpoint.conditions and endpoint.conditions.ready
        for address in endpoint.addresses
    ]


def _health(host: str, port: int) -> int:
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=30
        )
    return int(reply.status)


def _count(items: list[T], wanted: int) -> list[T] | None:
    return items if len(items) == wanted else None


def _events(bed: OperatorBed, reason: str) -> list[str]:
    found = client.CoreV1Api(bed.cluster.api_client).list_namespaced_event(
        operatorchart.RELEASE_NAMESPACE, field_selector=f"reason={reason}"
    )
    return [event.message or "" for event in found.items]


def test_the_default_install_elects_one_acting_replica_and_the_other_waits(
    bed: OperatorBed,
) -> None:
    deployment = next(o for o in bed.objects if o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    leader = operatorchart.wait_leader(bed.cluster.api_client)
    pods = wait_for(lambda: _count(bed.operator_pods(), 2), timeout=60)
    [standby] = [pod for pod in pods if pod != leader]
    assert wait_for(
        lambda: "this replica acts" in bed.operator_log(leader), timeout=60, description="leader"
    )
    waiting = f"is held by {leader}: {standby} waits to take over"
    assert wait_for(
        lambda: waiting in bed.operator_log(standby), timeout=60, description="standby log"
    )
    # Events are recorded a moment after the log lines (the recorder sends them in the
    # background).
    assert wait_for(
        lambda: any(f"{leader} became leader" in m for m in _events(bed, "LeaderElection")),
        timeout=30,
        description="LeaderElection event",
    )
    assert wait_for(
        lambda: any(f"{standby} waits" in m for m in _events(bed, "StandingBy")),
        timeout=30,
        description="StandingBy event",
    )


@pytest.fixture
def anna(bed: OperatorBed) -> dict[str, Any]:
    """The example applied as a user does (again, if an earlier test did) and Ready."""
    bed.avatar("anna")
    bed.cluster.kubectl("apply", "-n", bed.namespace, "-f", str(EXAMPLE))
    return wait_phase(bed.cluster, bed.namespace, "anna", "Ready", BUILD_TIMEOUT)


def test_the_example_is_ready_and_its_real_servers_answer_behind_the_service(
    bed: OperatorBed, anna: dict[str, Any]
) -> None:
    ready = anna
    assert ready["replicas"] == ready["readyReplicas"] == 2  # one GPU on each real node
    built_engines = engines(ready)
    assert set(built_engines) == {H100, REAL_NODE_PRODUCT}
    for engine in built_engines.values():
        assert engine["state"] == "Ready"
        assert engine["framesPerSecond"] > 0
        assert (bed.cache_dir() / "engines" / engine["key"].removeprefix("sha256:")).is_dir()
    # One build Job per product; exclusive sharing: one pod per GPU with 6 model instances.
    built = {
        j["metadata"]["labels"]["lipsync.dev/gpu-product"]
        for j in jobs(bed.cluster, bed.namespace, "anna")
    }
    assert built == set(built_engines)
    h100 = wait_serving(bed.cluster, bed.namespace, "anna", H100, 1)
    assert nodes_of(h100) == {H100_NODE.name: 1}
    args = h100[0]["spec"]["containers"][0]["args"]
    assert args[args.index("--instances") + 1] == "6"
    table = bed.cluster.kubectl("get", "lsm", "-n", bed.namespace).stdout.splitlines()
    assert table[1].split()[:2] == ["anna", "Ready"]

    wait_for(
        lambda: _count(_ready_endpoints(bed, "anna"), 2),
        timeout=60,
        description="two ready addresses in the EndpointSlice",
    )
    servers = [
        pod
        for product in (H100, REAL_NODE_PRODUCT)
        for pod in server_pods(bed.cluster, bed.namespace, "anna", product)
    ]
    assert {pod["spec"]["nodeName"] for pod in servers} == {H100_NODE.name, REAL_NODE.name}
    for pod in servers:
        target = f"pod/{pod['metadata']['name']}"
        with port_forward(bed.cluster, bed.namespace, target, 8001) as port:
            assert _health("127.0.0.1", port) == health_pb2.HealthCheckResponse.SERVING
    with port_forward(bed.cluster, bed.namespace, "svc/anna", 8001) as port:
        infer = triton.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            assert infer.is_model_ready("anna")
            rng = np.random.default_rng(0)
            image = rng.random((1, 6, 320, 320), dtype=np.float32)
            audio = rng.standard_normal((1, 32, 16, 16)).astype(np.float32)
            inputs = [
                triton.InferInput("input", list(image.shape), "FP32"),
                triton.InferInput("audio", list(audio.shape), "FP32"),
            ]
            inputs[0].set_data_from_numpy(image)
            inputs[1].set_data_from_numpy(audio)
            result = infer.infer("anna", inputs, outputs=[triton.InferRequestedOutput("output")])
        finally:
            infer.close()
    output = result.as_numpy("output")
    assert output is not None
    assert output.shape == (1, 3, 320, 320)
    assert 0.0 <= float(output.min()) <= float(output.max()) <= 1.0


def test_killing_the_acting_replica_hands_over_and_the_other_rolls_a_spec_change(
    bed: OperatorBed, anna: dict[str, Any]
) -> None:
    api = bed.cluster.api_client
    before = operatorchart.wait_leader(api)
    keys = {p: e["key"] for p, e in engines(status(bed.cluster, bed.namespace, "anna")).items()}
    # Its log goes with its pod.
    assert "this replica acts" in bed.operator_log(before)
    # Like a node dying under it: no SIGTERM, no clean-up, no release of the Lease.
    client.CoreV1Api(api).delete_namespaced_pod(
        before, operatorchart.RELEASE_NAMESPACE, grace_period_seconds=0
    )
    after = operatorchart.wait_leader(api, other_than=before, timeout=HANDOVER_S)
    acquired = f"acquired lease {operatorchart.RELEASE_NAMESPACE}/{operatorchart.LEASE}"
    wait_for(
        lambda: acquired in bed.operator_log(after),
        timeout=120,
        description="the new leader's log saying it took over",
    )

    patch_spec(bed.cluster, bed.namespace, "anna", {"batching": {"maxBatch": 4}})
    rolled = wait_phase(bed.cluster, bed.namespace, "anna", "Ready", BUILD_TIMEOUT)
    for product, engine in engines(rolled).items():
        assert engine["key"] != keys[product], "the batch profile is part of the engine key"
        assert engine["servingKey"] == engine["key"]
    # Who acted: the new leader's log says it took over from the old one, then handled the
    # change.

    def handled_after_taking_over() -> bool:
        took_over = bed.operator_log(after).split(f"(after {before}): this replica acts", 1)
        return len(took_over) == 2 and "Handler 'on_lipsyncmodel_change'" in took_over[1]

    assert wait_for(handled_after_taking_over, timeout=120, description="the new leader acted")


def _tls_secrets(bed: OperatorBed, directory: Path) -> tuple[CertificateAuthority, KeyPair]:
    """anna's serving certificate (for its Service's names) with the CA in ca.crt, and a token;
    returns the CA and a client certificate it signed."""
    ca = CertificateAuthority("anna", directory)
    service = f"anna.{bed.namespace}.svc"
    served = ca.issue("anna-server", dns=(service, f"{service}.cluster.local"))
    core = client.CoreV1Api(bed.cluster.api_client)
    tls = {
        "tls.crt": served.cert_pem,
        "tls.key": served.key_pem,
        "ca.crt": ca.pair.cert_pem,
    }
    core.create_namespaced_secret(
        bed.namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="anna-tls"),
            type="kubernetes.io/tls",
            data={k: base64.b64encode(v).decode() for k, v in tls.items()},
        ),
    )
    core.create_namespaced_secret(
        bed.namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="anna-token"), string_data={"token": TOKEN}
        ),
    )
    return ca, ca.issue("a-client")


def _served_over(bed: OperatorBed, security: ChannelSecurity) -> grpc.StatusCode:
    """One Generate through the Service, as a workstation reaches it."""

    async def generate(port: int) -> grpc.StatusCode:
        features = features_message(synthetic_features(1, 512, seed=2))
        request = lipsync_pb2.GenerateRequest(frame_indices=[0], features=features)
        async with open_channel(f"127.0.0.1:{port}", security) as channel:
            try:
                reply = await LipSyncStub(channel).Generate(request, timeout=60)
            except grpc.aio.AioRpcError as error:
                return error.code()
        assert len(reply.frames) == 1
        return grpc.StatusCode.OK

    with port_forward(bed.cluster, bed.namespace, "svc/anna", 8001) as port:
        return asyncio.run(generate(port))


def test_mutual_tls_and_a_token_from_secrets_guard_the_servers_and_probes_still_pass(
    bed: OperatorBed, anna: dict[str, Any], tmp_path: Path
) -> None:
    ca, client_pair = _tls_secrets(bed, tmp_path)
    access = {"tls": {"secretName": "anna-tls", "clientAuth": True}, "tokenSecret": "anna-token"}
    patch_spec(bed.cluster, bed.namespace, "anna", {"access": access})

    def guarded_and_ready() -> bool:
        pods = [
            pod
            for product in (H100, REAL_NODE_PRODUCT)
            for pod in server_pods(bed.cluster, bed.namespace, "anna", product)
        ]
        guarded = [p for p in pods if "--tls-client-ca-file" in p["spec"]["containers"][0]["args"]]
        # Ready means the kubelet's probes passed, on the plaintext health port.
        return len(guarded) == len(pods) == 2 and len(_ready_endpoints(bed, "anna")) == 2

    wait_for(guarded_and_ready, timeout=300, interval=2.0, description="guarded pods Ready")
    name = f"anna.{bed.namespace}.svc"
    token = tmp_path / "token"
    token.write_text(TOKEN)
    mtls = ChannelSecurity(
        ca_file=ca.pair.cert_path,
        cert_file=client_pair.cert_path,
        key_file=client_pair.key_path,
        token_file=token,
        server_name=name,
    )
    assert _served_over(bed, ChannelSecurity()) == grpc.StatusCode.UNAVAILABLE
    no_cert = ChannelSecurity(ca_file=ca.pair.cert_path, token_file=token, server_name=name)
    assert _served_over(bed, no_cert) == grpc.StatusCode.UNAVAILABLE
    no_token = dataclasses.replace(mtls, token_file=None)
    assert _served_over(bed, no_token) == grpc.StatusCode.UNAUTHENTICATED
    assert _served_over(bed, mtls) == grpc.StatusCode.OK
    # Nothing secret lands in what `kubectl get -o yaml` shows of the model and its servers.
    shown = bed.cluster.kubectl("get", "deploy,lsm", "-n", bed.namespace, "-o", "yaml").stdout
    assert TOKEN not in shown
