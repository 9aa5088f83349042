"""Pods of the project's images run for real on the fake nodes: processes, addresses,
volumes, service-account tokens, probes, restarts and termination."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed import ImageEntrypoint, PodRunner, wait_for
from lipsync_testbed.localpods import LOCAL_ANNOTATION, LOCAL_ANNOTATION_VALUE, MANAGED_CONDITION
from lipsync_testbed.podvolumes import HostLayout, VolumeBuilder
from lipsync_testbed.processes import is_running
from lipsync_testbed.resources import prebound_claim

pytestmark = pytest.mark.cluster

RUNTIME_IMAGE = "ghcr.io/lipsync/runtime:test"
TOOLS_IMAGE = "example.invalid/tools:1"  # runs locally only through the annotation
LIPSYNC = str(Path(sys.executable).parent / "lipsync")
Runner = Callable[..., PodRunner]


def _pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> client.V1Pod:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "annotations": {LOCAL_ANNOTATION: LOCAL_ANNOTATION_VALUE},
        },
        "spec": {"containers": containers, "terminationGracePeriodSeconds": 5, **spec},
    }
    return client.V1Pod.model_validate(body)


def _python(name: str, script: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": TOOLS_IMAGE,
        "command": ["python", "-c", textwrap.dedent(script)],
        **fields,
    }


def _read(api: client.ApiClient, namespace: str, name: str) -> client.V1Pod:
    return client.CoreV1Api(api).read_namespaced_pod(name, namespace)


def _phase(api: client.ApiClient, namespace: str, name: str, *phases: str) -> client.V1Pod | None:
    pod = _read(api, namespace, name)
    return pod if pod.status is not None and pod.status.phase in phases else None


def _wait_phase(
    api: client.ApiClient, namespace: str, name: str, *phases: str, timeout: float = 60
) -> client.V1Pod:
    return wait_for(
        lambda: _phase(api, namespace, name, *phases),
        timeout=timeout,
        description=f"pod {name} {'/'.join(phases)}",
    )


def _gone(api: client.ApiClient, namespace: str, name: str) -> bool:
    try:
        _read(api, namespace, name)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def _events(api: client.ApiClient, namespace: str, name: str) -> list[tuple[str, str]]:
    items = (
        client.CoreV1Api(api)
        .list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        .items
    )
    return [
        (e.reason or "", e.message or "")
        for e in items
        if e.source and e.source.component == "kubelet"
    ]


def _container_status(pod: client.V1Pod) -> client.V1ContainerStatus:
    assert pod.status is not None
    (status,) = pod.status.container_statuses or []
    return status


# -- servers behind a Service --------------------------------------------------------------


def _ready_addresses(api: client.ApiClient, namespace: str, service: str) -> list[str]:
    """Ready endpoint addresses of a Service, from its EndpointSlices."""
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return sorted(
        address
        for item in slices.items
        for endpoint in item.endpoints or []
        if endpoint.conditions is not None and endpoint.conditions.ready
        for address in endpoint.addresses
    )


def _two_ready(api: client.ApiClient, namespace: str, exclude: str) -> list[str] | None:
    addresses = _ready_addresses(api, namespace, "lipsync")
    return addresses if len(addresses) == 2 and exclude not in addresses else None


def _server_deployment(replicas: int) -> client.V1Deployment:
    labels = {"app": "lipsync-serve"}
    container = {
        "name": "server",
        "image": RUNTIME_IMAGE,  # no command: the image's entrypoint, `lipsync`
        "args": [
            "serve",
            "--model=/models/unet328.onnx",
            "--avatar=/avatar",
            "--backend=onnxruntime-cpu",
            "--host=$(POD_IP)",
            "--grpc-port=8001",
            "--metrics-port=0",
            "--max-batch-size=1",
            "--intra-op-threads=1",
            "--no-warmup",
            "--shutdown-grace-seconds=1",
        ],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "grpc", "containerPort": 8001}],
        "readinessProbe": {"grpc": {"port": 8001}, "periodSeconds": 1, "failureThreshold": 3},
        "volumeMounts": [
            {"name": "models", "mountPath": "/models", "readOnly": True},
            {"name": "avatar", "mountPath": "/avatar", "readOnly": True},
        ],
    }
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "lipsync-serve"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 20,
                    "containers": [container],
                    "volumes": [
                        {"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
                        {"name": "avatar", "hostPath": {"path": "/srv/lipsync/avatar"}},
                    ],
                },
            },
        },
    }
    return client.V1Deployment.model_validate(body)


def _lipsync(*args: str) -> None:
    subprocess.run([LIPSYNC, *args], check=True, capture_output=True, timeout=300)


def _health(address: str) -> int:
    with grpc.insecure_channel(f"{address}:8001") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    return int(reply.status)


def test_deployment_of_real_servers_behind_a_service(
    kube_api: client.ApiClient, kube_namespace: str, pod_runner: Runner, tmp_path: Path
) -> None:
    models, avatar = tmp_path / "models", tmp_path / "avatar"
    models.mkdir()
    _lipsync("model", "reference", "-o", str(models / "unet328.onnx"))
    _lipsync(
        "avatar", "demo", "-o", str(avatar), "--frames", "4", "--width", "320", "--height", "240"
    )
    runner = pod_runner(host_paths={"/srv/lipsync": tmp_path})
    if runner.address_kind != "alias":
        pytest.skip(
            "EndpointSlices reject loopback pod addresses; adding pod addresses to lo "
            "needs CAP_NET_ADMIN (root) or passwordless sudo"
        )
    volume = prebound_claim(kube_api, kube_namespace, "models", "/srv/lipsync/models")
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    try:
        apps.create_namespaced_deployment(kube_namespace, _server_deployment(2))
        core.create_namespaced_service(
            kube_namespace,
            client.V1Service.model_validate(
                {
                    "metadata": {"name": "lipsync"},
                    "spec": {
                        "selector": {"app": "lipsync-serve"},
                        "ports": [{"name": "grpc", "port": 8001, "targetPort": "grpc"}],
                    },
                }
            ),
        )
        ready = wait_for(
            lambda: _two_ready(kube_api, kube_namespace, exclude=""),
            timeout=180,
            description="2 ready server addresses in the EndpointSlice",
        )
        pods = core.list_namespaced_pod(kube_namespace, label_selector="app=lipsync-serve").items
        assert sorted(str(p.status.pod_ip) for p in pods if p.status) == ready
        assert all(a.startswith("198.18.") or a.startswith("198.19.") for a in ready)

        target = ready[0]
        assert _health(target) == health_pb2.HealthCheckResponse.SERVING
        infer = triton.InferenceServerClient(f"{target}:8001")
        rng = np.random.default_rng(1)
        inputs = [
            triton.InferInput("input", [1, 6, 320, 320], "FP32"),
            triton.InferInput("audio", [1, 32, 16, 16], "FP32"),
        ]
        inputs[0].set_data_from_numpy(rng.random((1, 6, 320, 320), dtype=np.float32))
        inputs[1].set_data_from_numpy(rng.normal(size=(1, 32, 16, 16)).astype(np.float32))
        result = infer.infer("lipsync", inputs, outputs=[triton.InferRequestedOutput("output")])
        output = result.as_numpy("output")
        infer.close()
        assert output is not None
        assert output.shape == (1, 3, 320, 320)
        assert np.isfinite(output).all()

        victim = next(p for p in pods if p.status is not None and p.status.pod_ip == target)
        assert victim.metadata is not None
        victim_name = str(victim.metadata.name)
        core.delete_namespaced_pod(victim_name, kube_namespace)
        wait_for(
            lambda: _gone(kube_api, kube_namespace, victim_name),
            timeout=60,
            description="deleted server pod removed",
        )
        assert "shutting down: draining" in runner.log(kube_namespace, victim_name)
        after = wait_for(
            lambda: _two_ready(kube_api, kube_namespace, exclude=target),
            timeout=180,
            description="the replacement server ready in the EndpointSlice",
        )
        assert _health(after[0]) == _health(after[1]) == health_pb2.HealthCheckResponse.SERVING
        assert not runner.errors
    finally:
        apps.delete_namespaced_deployment("lipsync-serve", kube_namespace)
        core.delete_persistent_volume(volume)


# -- environment and volumes ----------------------------------------------------------------


def _field(path: str) -> dict[str, Any]:
    return {"valueFrom": {"fieldRef": {"fieldPath": path}}}


ENV_AND_VOLUMES = """
import json, os, pathlib
open("/scratch/written", "w").write("scratch")
print(json.dumps({
    "argv": __import__("sys").argv[1:],
    "env": {k: os.environ.get(k) for k in (
        "POD_NAME", "POD_NAMESPACE", "POD_IP", "NODE", "APP", "GREETING", "FROM_CM",
        "CM_mode", "PASSWORD", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT",
        "FROM_IMAGE")},
    "config": open("/etc/config/mode").read(),
    "secret": open("/etc/secret/password").read(),
    "labels": open("/etc/podinfo/labels").read(),
    "projected": sorted(p.name for p in pathlib.Path("/etc/all").iterdir()),
    "host": open("/host/marker").read(),
    "claim": open("/claim/data").read(),
    "scratch": open("/scratch/written").read(),
}))
pathlib.Path("/claim/from-pod").write_text("hello")
"""


def test_env_field_refs_expansion_and_every_volume_kind(
    kube_api: client.ApiClient, kube_namespace: str, pod_runner: Runner, tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_config_map(
        kube_namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"), data={"mode": "fast"}),
    )
    core.create_namespaced_secret(
        kube_namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="creds"), string_data={"password": "s3cret"}
        ),
    )
    host_dir, claim_dir = tmp_path / "host", tmp_path / "claim"
    host_dir.mkdir()
    (host_dir / "marker").write_text("on the node")
    claim_dir.mkdir()
    (claim_dir / "data").write_text("claimed")
    volume = prebound_claim(kube_api, kube_namespace, "data", "/srv/data")
    image_env = ImageEntrypoint(("python",), env=(("FROM_IMAGE", "yes"), ("GREETING", "image")))
    runner = pod_runner(
        host_paths={"/srv/host": host_dir, "/srv/data": claim_dir},
        image_entrypoints={"example.invalid/tools": image_env},
    )
    container = _python(
        "main",
        ENV_AND_VOLUMES,
        args=["--name=$(POD_NAME)", "$$(POD_NAME)", "$(UNDEFINED)", "/claim/data"],
        env=[
            {"name": "POD_NAME", **_field("metadata.name")},
            {"name": "POD_NAMESPACE", **_field("metadata.namespace")},
            {"name": "POD_IP", **_field("status.podIP")},
            {"name": "NODE", **_field("spec.nodeName")},
            {"name": "APP", **_field("metadata.labels['app']")},
            {"name": "GREETING", "value": "hello $(POD_NAME) on $(NODE)"},
            {
                "name": "PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
            },
            {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
        ],
        envFrom=[{"configMapRef": {"name": "cfg"}, "prefix": "CM_"}],
        volumeMounts=[
            {"name": "config", "mountPath": "/etc/config"},
            {"name": "secret", "mountPath": "/etc/secret"},
            {"name": "podinfo", "mountPath": "/etc/podinfo"},
            {"name": "all", "mountPath": "/etc/all"},
            {"name": "host", "mountPath": "/host"},
            {"name": "claim", "mountPath": "/claim"},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    )
    pod = _pod(
        "env-volumes",
        [container],
        restartPolicy="Never",
        volumes=[
            {"name": "config", "configMap": {"name": "cfg"}},
            {"name": "secret", "secret": {"secretName": "creds"}},
            {
                "name": "podinfo",
                "downwardAPI": {
                    "items": [
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels['app']"}}
                    ]
                },
            },
            {
                "name": "all",
                "projected": {
                    "sources": [
                        {"configMap": {"name": "cfg"}},
                        {"secret": {"name": "creds", "items": [{"key": "password", "path": "pw"}]}},
                    ]
                },
            },
            {"name": "host", "hostPath": {"path": "/srv/host"}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "scratch", "emptyDir": {}},
        ],
    )
    assert pod.metadata is not None
    pod.metadata.labels = {"app": "probe-me"}
    try:
        core.create_namespaced_pod(kube_namespace, pod)
        done = _wait_phase(kube_api, kube_namespace, "env-volumes", "Succeeded", "Failed")
        output = runner.log(kube_namespace, "env-volumes")
        assert done.status is not None
        assert done.status.phase == "Succeeded", output
        seen = json.loads(output.strip().splitlines()[-1])
        ip = done.status.pod_ip
        assert ip
        assert not ip.startswith("198.18.128."), "KWOK must not set a local pod's address"
        assert seen["argv"] == [
            "--name=env-volumes",
            "$(POD_NAME)",
            "$(UNDEFINED)",
            str(claim_dir / "data"),
        ]
        assert seen["env"] == {
            "POD_NAME": "env-volumes",
            "POD_NAMESPACE": kube_namespace,
            "POD_IP": ip,
            "NODE": done.spec.node_name if done.spec else None,
            "APP": "probe-me",
            "GREETING": f"hello env-volumes on {done.spec.node_name if done.spec else ''}",
            "FROM_CM": "fast",
            "CM_mode": "fast",
            "PASSWORD": "s3cret",
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(kube_api.configuration.host.rsplit(":", 1)[1]),
            "FROM_IMAGE": "yes",  # the image's ENV; its GREETING is the container's
        }
        assert seen["config"] == "fast"
        assert seen["secret"] == "s3cret"
        assert seen["labels"] == "probe-me"
        assert seen["projected"] == ["mode", "pw"]
        assert seen["host"] == "on the node"
        assert seen["claim"] == "claimed"
        assert seen["scratch"] == "scratch"
        assert (claim_dir / "from-pod").read_text() == "hello"
        status = _container_status(done)
        assert status.state is not None
        assert status.state.terminated is not None
        assert status.state.terminated.exit_code == 0
        conditions = {c.type: c.status for c in done.status.conditions or []}
        assert conditions["Ready"] == "False"
        assert conditions["Initialized"] == "True"
    finally:
        core.delete_persistent_volume(volume)


# -- service-account token ------------------------------------------------------------------

IN_CLUSTER = """
import os
from kubernetes import client, config
config.load_incluster_config()
api = client.ApiClient()
review = client.AuthenticationV1Api(api).create_self_subject_review(
    client.V1SelfSubjectReview())
print("user", review.status.user_info.username)
namespace = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
names = [c.metadata.name for c in client.CoreV1Api(api).list_namespaced_config_map(namespace).items]
print("configmaps", ",".join(sorted(names)))
"""

NO_TOKEN = """
import os
from kubernetes import config
print("token file", os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"))
try:
    config.load_incluster_config()
except config.ConfigException as exc:
    print("no in-cluster config:", exc)
"""


def _authenticated_as(api: client.ApiClient, token: str) -> str:
    review = client.AuthenticationV1Api(api).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
    )
    assert review.status is not None
    assert review.status.authenticated, review.status.error
    assert review.status.user is not None
    return str(review.status.user.username)


def _refreshed_token_authenticates(
    api: client.ApiClient, namespace: str, name: str, tmp_path: Path
) -> None:
    """A refresh (done by the runner before 80 % of the lifetime) writes a new valid token."""
    pod = _read(api, namespace, name)
    builder = VolumeBuilder(client.CoreV1Api(api), HostLayout(tmp_path / "node"))
    dirs = builder.build(pod, tmp_path / "refresh")
    (volume,) = [v.name for v in pod.spec.volumes or [] if v.projected] if pod.spec else []
    token_file = dirs[volume] / "token"
    first = token_file.read_text()
    builder.refresh_tokens(pod, dirs)
    second = token_file.read_text()
    assert first != second
    account = f"system:serviceaccount:{namespace}:default"
    assert _authenticated_as(api, first) == _authenticated_as(api, second) == account


def test_service_account_token_works_in_cluster(
    kube_api: client.ApiClient, kube_namespace: str, pod_runner: Runner, tmp_path: Path
) -> None:
    runner = pod_runner()
    if not runner.mount_namespaces:
        pytest.skip("mount namespaces unavailable here (unshare failed): no token at its path")
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(
        kube_namespace,
        client.V1Role.model_validate(
            {
                "metadata": {"name": "read-config"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
            }
        ),
    )
    rbac.create_namespaced_role_binding(
        kube_namespace,
        client.V1RoleBinding.model_validate(
            {
                "metadata": {"name": "read-config"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "read-config",
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": "default", "namespace": kube_namespace}
                ],
            }
        ),
    )
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(
        kube_namespace, _pod("in-cluster", [_python("main", IN_CLUSTER)], restartPolicy="Never")
    )
    core.create_namespaced_pod(
        kube_namespace,
        _pod(
            "no-token",
            [_python("main", NO_TOKEN)],
            restartPolicy="Never",
            automountServiceAccountToken=False,
        ),
    )
    done = _wait_phase(kube_api, kube_namespace, "in-cluster", "Succeeded", "Failed")
    output = runner.log(kube_namespace, "in-cluster")
    assert done.status is not None
    assert done.status.phase == "Succeeded", output
    assert f"user system:serviceaccount:{kube_namespace}:default" in output
    assert "kube-root-ca.crt" in output.split("configmaps", 1)[1]

    _refreshed_token_authenticates(kube_api, kube_namespace, "in-cluster", tmp_path)

    done = _wait_phase(kube_api, kube_namespace, "no-token", "Succeeded", "Failed")
    output = runner.log(kube_namespace, "no-token")
    assert done.status is not None
    assert done.status.phase == "Succeeded", output
    assert "token file False" in output
    assert "no in-cluster config:" in output


# -- restarts, probes, termination ---------------------------------------------------------


def _wait_restarts(
    api: client.ApiClient, namespace: str, name: str, restarts: int
) -> client.V1ContainerStatus:
    def restarted() -> client.V1ContainerStatus | None:
        status = _container_status(_read(api, namespace, name))
        return status if status.restart_count >= restarts else None

    return wait_for(restarted, timeout=60, description=f"{name} restarted {restarts} times")


def test_restart_policies_with_a_crashing_command(
    kube_api: client.ApiClient, kube_namespace: str, pod_runner: Runner
) -> None:
    runner = pod_runner()
    core = client.CoreV1Api(kube_api)
    crash = {"name": "main", "image": TOOLS_IMAGE, "command": ["sh", "-c", "echo run; exit 3"]}
    core.create_namespaced_pod(kube_namespace, _pod("always", [crash]))
    core.create_namespaced_pod(kube_namespace, _pod("never", [crash], restartPolicy="Never"))
    once = {
        "name": "main",
        "image": TOOLS_IMAGE,
        "command": ["sh", "-c", "test -f /work/ran && exit 0; touch /work/ran; exit 1"],
        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
    }
    core.create_namespaced_pod(
        kube_namespace,
        _pod(
            "on-failure",
            [once],
            restartPolicy="OnFailure",
            volumes=[{"name": "work", "emptyDir": {}}],
        ),
    )

    failed = _wait_phase(kube_api, kube_namespace, "never", "Failed")
    terminated = _container_status(failed).state
    assert terminated is not None
    assert terminated.terminated is not None
    assert (terminated.terminated.exit_code, _container_status(failed).restart_count) == (3, 0)

    succeeded = _wait_phase(kube_api, kube_namespace, "on-failure", "Succeeded", timeout=60)
    assert _container_status(succeeded).restart_count == 1

    status = _wait_restarts(kube_api, kube_namespace, "always", 2)
    assert status.last_state is not None
    assert status.last_state.terminated is not None
    assert status.last_state.terminated.exit_code == 3
    running = _read(kube_api, kube_namespace, "always").status
    assert running is not None
    assert running.phase == "Running"
    assert runner.log(kube_namespace, "always", previous=True) == "run\n"


HTTP_SERVER = """
import http.server, os, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ready" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
print("listening on", os.environ["POD_IP"], flush=True)
http.server.HTTPServer((os.environ["POD_IP"], 8080), Handler).serve_forever()
"""


def test_probes_mark_ready_and_a_failing_liveness_probe_restarts(
    kube_api: client.ApiClient, kube_namespace: str, pod_runner: Runner
) -> None:
    pod_runner()
    core = client.CoreV1Api(kube_api)
    pod_ip = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    base = _python(
        "main", HTTP_SERVER, env=[pod_ip], ports=[{"name": "http", "containerPort": 8080}]
    )
    healthy = {
        **base,
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
        "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        "startupProbe": {
            "exec": {"command": ["python", "-c", "print('started')"]},
            "periodSeconds": 1,
        },
    }
    sick = {
        **base,
        "livenessProbe": {
            "httpGet": {"path": "/alive", "port": 8080},
            "periodSeconds": 1,
            "failureThreshold": 2,
            "initialDelaySeconds": 1,
        },
    }
    core.create_namespaced_pod(kube_namespace, _pod("healthy", [healthy]))
    core.create_namespaced_pod(kube_namespace, _pod("sick", [sick]))

    def ready() -> client.V1Pod | None:
        pod = _read(kube_api, kube_namespace, "healthy")
        conditions = {c.type: c.status for c in (pod.status.conditions if pod.status else []) or []}
        return pod if conditions.get("Ready") == "True" else None

    pod = wait_for(ready, timeout=60, description="pod Ready through its readiness probe")
    assert _container_status(pod).started is True

    status = _wait_restarts(kube_api, kube_namespace, "sick", 1)
    assert status.last_state is not None
    assert status.last_state.terminated is not None
    assert status.last_state.terminated.exit_code == 143  # SIGTERM
    events = _events(kube_api, kube_namespace, "sick")
    assert ("Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 404") in events
    assert ("Killing", "Stopping container main (failed liveness probe)") in events
    assert _container_status(_read(kube_api, kube_namespace, "healthy")).restart_count == 0


GRACEFUL = """
import os, signal, sys, time
def stop(*_):
    print("got SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("pid", os.getpid(), flush=True)
time.sleep(600)
"""

STUBBORN = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("pid", os.getpid(), flush=True)
time.sleep(600)
"""


def _pid(runner: PodRunner, namespace: str, name: str) -> int:
    line = wait_for(
        lambda: next(
            (x for x in runner.log(namespace, name).splitlines() if x.startswith("pid")), None
        ),
        timeout=60,
        description=f"{name} started",
    )
    return int(line.split()[1])


def test_deletion_terminates_gracefully_or_kills_after_the_grace_period(
    kube_api: client.ApiClient, kube_namespace: str, pod_runner: Runner
) -> None:
    runner = pod_runner()
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(
        kube_namespace,
        _pod("graceful", [_python("main", GRACEFUL)], terminationGracePeriodSeconds=30),
    )
    core.create_namespaced_pod(
        kube_namespace,
        _pod("stubborn", [_python("main", STUBBORN)], terminationGracePeriodSeconds=2),
    )
    graceful, stubborn = (_pid(runner, kube_namespace, n) for n in ("graceful", "stubborn"))
    status = _read(kube_api, kube_namespace, "graceful").status
    assert status is not None
    ip = status.pod_ip

    started = time.monotonic()
    core.delete_namespaced_pod("graceful", kube_namespace)
    core.delete_namespaced_pod("stubborn", kube_namespace)
    wait_for(
        lambda: _gone(kube_api, kube_namespace, "graceful"),
        timeout=30,
        description="graceful pod removed",
    )
    assert time.monotonic() - started < 15
    assert ("Killing", "Stopping container main") in _events(kube_api, kube_namespace, "graceful")
    assert "got SIGTERM" in runner.log(kube_namespace, "graceful")
    assert not is_running(graceful)
    wait_for(
        lambda: _gone(kube_api, kube_namespace, "stubborn"),
        timeout=30,
        description="stubborn pod removed",
    )
    assert time.monotonic() - started >= 2
    assert not is_running(stubborn)
    assert runner.pod_ip(kube_namespace, "graceful") is None
    assert ip is not None


def test_job_pod_runs_to_completion_with_its_termination_message(
    kube_api: client.ApiClient, kube_namespace: str, pod_runner: Runner
) -> None:
    pod_runner()
    script = "import json; open('/dev/termination-log', 'w').write(json.dumps({'engine': 'built'}))"
    template = _pod("unused", [_python("main", script)], restartPolicy="Never")
    assert template.metadata is not None
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="build"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(annotations=template.metadata.annotations),
                spec=template.spec,
            ),
        ),
    )
    batch = client.BatchV1Api(kube_api)
    batch.create_namespaced_job(kube_namespace, job)

    def complete() -> bool:
        status = batch.read_namespaced_job("build", kube_namespace).status
        conditions = (status.conditions if status else None) or []
        return any(c.type == "Complete" and c.status == "True" for c in conditions)

    wait_for(complete, timeout=60, description="job Complete")
    (pod,) = (
        client.CoreV1Api(kube_api)
        .list_namespaced_pod(kube_namespace, label_selector="batch.kubernetes.io/job-name=build")
        .items
    )
    state = _container_status(pod).state
    assert state is not None
    assert state.terminated is not None
    assert (state.terminated.exit_code, state.terminated.message) == (0, '{"engine": "built"}')


TCP_SERVER = """
import os, socket
server = socket.create_server((os.environ["POD_IP"], 9000))
print("listening", flush=True)
while True:
    server.accept()[0].close()
"""


def test_loopback_addresses_serve_but_endpoint_slices_refuse_them(
    kube_api: client.ApiClient, kube_namespace: str, pod_runner: Runner
) -> None:
    """Without CAP_NET_ADMIN pods get 127/8 addresses: the API server takes them as pod IPs
    (and probes reach the process there) but not as EndpointSlice addresses."""
    pod_runner(addresses="loopback")
    pod_ip = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    server = _python(
        "main",
        TCP_SERVER,
        env=[pod_ip],
        readinessProbe={"tcpSocket": {"port": 9000}, "periodSeconds": 1},
    )
    client.CoreV1Api(kube_api).create_namespaced_pod(kube_namespace, _pod("loopback", [server]))

    def ready() -> str | None:
        status = _read(kube_api, kube_namespace, "loopback").status
        conditions = {c.type: c.status for c in (status.conditions if status else None) or []}
        return status.pod_ip if status and conditions.get("Ready") == "True" else None

    address = wait_for(ready, timeout=60, description="loopback pod Ready")
    assert ipaddress.IPv4Address(address) in ipaddress.IPv4Network("127.0.0.0/8")
    endpoint_slice = client.V1EndpointSlice(
        metadata=client.V1ObjectMeta(name="manual"),
        address_type="IPv4",
        endpoints=[client.V1Endpoint(addresses=[address])],
    )
    with pytest.raises(ApiException) as refused:
        client.DiscoveryV1Api(kube_api).create_namespaced_endpoint_slice(
            kube_namespace, endpoint_slice
        )
    assert refused.value.status == 422
    assert "may not be in the loopback range" in str(refused.value.body)


def test_init_containers_run_first_then_every_container(
    kube_api: client.ApiClient, kube_namespace: str, pod_runner: Runner
) -> None:
    runner = pod_runner()
    shared = [{"name": "shared", "mountPath": "/shared"}]
    init = {
        "name": "prepare",
        "image": TOOLS_IMAGE,
        "command": ["sh", "-c", "echo prepared > /shared/ready"],
        "volumeMounts": shared,
    }
    reader = {
        "name": "reader",
        "image": TOOLS_IMAGE,
        "command": ["sh", "-c", "cat /shared/ready"],
        "volumeMounts": shared,
    }
    sidecar = {"name": "sidecar", "image": TOOLS_IMAGE, "command": ["sh", "-c", "echo side"]}
    client.CoreV1Api(kube_api).create_namespaced_pod(
        kube_namespace,
        _pod(
            "with-init",
            [reader, sidecar],
            initContainers=[init],
            restartPolicy="Never",
            volumes=[{"name": "shared", "emptyDir": {}}],
        ),
    )
    done = _wait_phase(kube_api, kube_namespace, "with-init", "Succeeded", "Failed")
    assert done.status is not None
    assert done.status.phase == "Succeeded", runner.log_tails()
    (init_status,) = done.status.init_container_statuses or []
    assert init_status.state is not None
    assert init_status.state.terminated is not None
    assert init_status.state.terminated.exit_code == 0
    assert runner.log(kube_namespace, "with-init", "reader") == "prepared\n"
    assert runner.log(kube_namespace, "with-init", "sidecar") == "side\n"


def test_a_stopped_runner_hands_its_pods_back_for_deletion(
    kube_api: client.ApiClient, kube_namespace: str, pod_runner: Runner
) -> None:
    """Once its runner stops, a pod is no longer managed: deleting it (as a namespace
    deletion does) removes it through KWOK instead of leaving it Terminating."""
    runner = pod_runner()
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(kube_namespace, _pod("orphan", [_python("main", STUBBORN)]))
    pid = _pid(runner, kube_namespace, "orphan")
    runner.stop()
    assert not is_running(pid)
    status = _read(kube_api, kube_namespace, "orphan").status
    assert status is not None
    conditions = {c.type: c.status for c in status.conditions or []}
    assert conditions[MANAGED_CONDITION] == "False"
    core.delete_namespaced_pod("orphan", kube_namespace)
    wait_for(
        lambda: _gone(kube_api, kube_namespace, "orphan"),
        timeout=30,
        description="KWOK removes the deleted pod of a stopped runner",
    )
