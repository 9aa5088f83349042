"""The Helm chart: renders with `helm template`, least-privilege RBAC, hardened operator pod."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lipsync_operator.config import OperatorConfig
from lipsync_operator.naming import LABEL_MODEL, model_labels

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "lipsync-operator"


def _helm() -> str | None:
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    cached = sorted(Path.home().glob(".cache/lipsync/*/bin/helm"))
    return str(cached[-1]) if cached else None


HELM = _helm()
NO_HELM = "helm not found on PATH or in ~/.cache/lipsync/*/bin"
# `make test` builds helm first and sets this: there a missing helm fails the chart tests.
HELM_REQUIRED = os.environ.get("LIPSYNC_REQUIRE_HELM") == "1"
needs_helm = pytest.mark.skipif(HELM is None and not HELM_REQUIRED, reason=NO_HELM)


def render(*args: str) -> list[dict[str, Any]]:
    assert HELM is not None, NO_HELM
    result = subprocess.run(
        [HELM, "template", "lsm", str(CHART), "--namespace", "lipsync-system", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_error(*args: str) -> str:
    """``helm template`` that must fail; returns its stderr."""
    assert HELM is not None, NO_HELM
    result = subprocess.run(
        [HELM, "template", "lsm", str(CHART), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    return result.stderr


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


@needs_helm
def test_chart_lints_clean() -> None:
    assert HELM is not None, NO_HELM
    result = subprocess.run(
        [HELM, "lint", "--strict", str(CHART)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_helm
def test_rbac_is_exact_with_no_wildcards() -> None:
    [role] = by_kind(render(), "ClusterRole")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted[("lipsync.dev", "lipsyncmodels/status")] == {"get", "patch"}
    assert granted[("", "nodes")] == {"get", "list", "watch"}
    assert granted[("", "pods")] == {"get", "list", "watch"}
    assert granted[("", "events")] == {"create"}
    assert granted[("batch", "jobs")] >= {"create", "patch", "delete"}
    assert ("", "secrets") not in granted
    assert all("escalate" not in v and "bind" not in v for v in granted.values())
    [binding] = by_kind(render(), "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


@needs_helm
def test_operator_pod_is_hardened() -> None:
    [deployment] = by_kind(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    assert container["args"][:3] == [
        "operator",
        "run",
        "--leader-election-lease=lipsync-operator",
    ]
    assert "--liveness=http://$(POD_IP):8080/healthz" in container["args"]
    downward = {
        item["name"]: item["valueFrom"]["fieldRef"]["fieldPath"]
        for item in container["env"]
        if "valueFrom" in item
    }
    assert downward == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "POD_IP": "status.podIP",
    }


@needs_helm
def test_the_build_signing_key_is_a_secret_only_the_operator_mounts() -> None:
    docs = render()
    [secret] = by_kind(docs, "Secret")
    assert secret["metadata"]["name"].endswith("-build-signing")
    assert len(base64.b64decode(secret["data"]["key"])) == 48
    [deployment] = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    [container] = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    env = {item["name"]: item.get("value") for item in container["env"]}
    key_file = Path(env["LIPSYNC_BUILD_SIGNING_KEY_FILE"])
    assert key_file.parent == Path(mount["mountPath"])
    assert OperatorConfig.from_env(env).build_signing_key_file == key_file
    # Nothing in the chart grants reading Secrets.
    rules = [
        r for kind in ("ClusterRole", "Role") for doc in by_kind(docs, kind) for r in doc["rules"]
    ]
    assert not any("secrets" in rule["resources"] for rule in rules)


@needs_helm
def test_leader_election_lease_rights_are_namespaced() -> None:
    docs = render()
    [role] = by_kind(docs, "Role")
    assert role["metadata"]["namespace"] == "lipsync-system"
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    [binding] = by_kind(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    [cluster_role] = by_kind(docs, "ClusterRole")
    groups = {group for rule in cluster_role["rules"] for group in rule["apiGroups"]}
    assert "coordination.k8s.io" not in groups
    assert "kopf.dev" not in groups


@needs_helm
def test_values_reach_the_operator_environment() -> None:
    docs = render(
        "--set", "runtime.image.tag=9.9", "--set", "runtime.backend=onnxruntime-cpu",
        "--set", "cache.kind=hostPath", "--set", "watchNamespaces={team-a}",
        "--set", "leaderElection.enabled=false", "--set", "replicaCount=1",
        "--set", "nodes.notReadyGraceSeconds=60", "--set", "server.listenAddress=$(POD_IP)",
    )  # fmt: skip
    [deployment] = by_kind(docs, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    assert env["LIPSYNC_RUNTIME_IMAGE"] == "ghcr.io/lipsync/runtime:9.9"
    assert env["LIPSYNC_BACKEND"] == "onnxruntime-cpu"
    assert env["LIPSYNC_CACHE_KIND"] == "hostPath"
    assert env["LIPSYNC_CACHE_HOST_PATH"] == "/var/lib/lipsync/cache"
    assert env["LIPSYNC_NODE_GRACE_SECONDS"] == "60"
    # Escaped, so the kubelet's $(VAR) expansion in the operator pod (where POD_IP is the
    # operator's own address) hands the servers "$(POD_IP)" for their own address.
    assert env["LIPSYNC_SERVER_LISTEN_ADDRESS"] == "$$(POD_IP)"
    assert not any(arg.startswith("--leader-election") for arg in container["args"])
    assert "--namespace=team-a" in container["args"]
    assert [role["metadata"]["namespace"] for role in by_kind(docs, "Role")] == ["team-a"]
    # The operator reads no cache volume: it learns engines from build Jobs and model status.
    volumes = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes == {"tmp", "build-signing"}


@needs_helm
def test_pod_sizes_reach_the_operator_environment() -> None:
    defaults = _operator_env(render())
    assert defaults["LIPSYNC_SERVER_RESOURCES_CPU"] == "2"
    assert defaults["LIPSYNC_BUILDER_RESOURCES_MEMORY_LIMIT"] == "16Gi"
    sizes = ["--set", "server.resources.requests.cpu=100m"]
    sizes += ["--set", "builder.resources.requests.memory=1Gi"]
    small = _operator_env(render(*sizes))
    assert small["LIPSYNC_SERVER_RESOURCES_CPU"] == "100m"
    assert small["LIPSYNC_BUILDER_RESOURCES_MEMORY"] == "1Gi"
    assert "requests" in render_error("--set", "server.resources.requests=null")


@needs_helm
def test_values_schema_rejects_bad_values() -> None:
    assert "cache" in render_error("--set", "cache.kind=nfs")


@needs_helm
def test_replicas_without_leader_election_are_refused() -> None:
    assert "replicaCount > 1 needs leaderElection.enabled" in render_error(
        "--set", "leaderElection.enabled=false"
    )


@needs_helm
def test_crds_are_installed_with_the_chart() -> None:
    crds = by_kind(render("--include-crds"), "CustomResourceDefinition")
    names = {crd["metadata"]["name"] for crd in crds}
    assert names == {"lipsyncmodels.lipsync.dev"}


KEDA_VALUES = (
    "--set", "autoscaling.scaler=keda",
    "--set", "autoscaling.keda.prometheusAddress=http://prometheus.monitoring.svc:9090",
)  # fmt: skip


def _operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    [deployment] = by_kind(docs, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def _scaler_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    [role] = by_kind(docs, "ClusterRole")
    return [rule for rule in role["rules"] if "keda.sh" in rule["apiGroups"]]


@needs_helm
def test_autoscaling_defaults_to_a_cpu_hpa_with_no_keda_rights_and_no_monitor() -> None:
    docs = render()
    env = _operator_env(docs)
    assert (env["LIPSYNC_AUTOSCALER"], env["LIPSYNC_HPA_FRAMES_METRIC"]) == ("hpa", "false")
    assert env["LIPSYNC_AUTOSCALED_NODE_LABEL"] == "karpenter.sh/nodepool"
    assert _scaler_rules(docs) == []
    assert by_kind(docs, "ServiceMonitor") == []


@needs_helm
def test_keda_scaler_reaches_the_operator_and_grants_scaledobjects_only() -> None:
    docs = render(*KEDA_VALUES)
    env = _operator_env(docs)
    assert env["LIPSYNC_AUTOSCALER"] == "keda"
    assert env["LIPSYNC_PROMETHEUS_ADDRESS"] == "http://prometheus.monitoring.svc:9090"
    assert (env["LIPSYNC_KEDA_POLLING_SECONDS"], env["LIPSYNC_KEDA_COOLDOWN_SECONDS"]) == (
        "15",
        "300",
    )
    [rule] = _scaler_rules(docs)
    assert rule["resources"] == ["scaledobjects"]
    assert set(rule["verbs"]) == {"get", "list", "watch", "create", "patch", "delete"}


@needs_helm
def test_keda_without_a_prometheus_address_is_refused() -> None:
    assert "needs autoscaling.keda.prometheusAddress" in render_error(
        "--set", "autoscaling.scaler=keda"
    )


@needs_helm
def test_service_monitor_scrapes_model_services_with_the_query_labels() -> None:
    docs = render(
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "metrics.serviceMonitor.labels.release=kube-prometheus",
        "--set", "watchNamespaces={team-a}",
    )  # fmt: skip
    [monitor] = by_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= model_labels("anna").items()  # every model's Service
    assert LABEL_MODEL not in selector
    [endpoint] = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    assert {r["targetLabel"] for r in endpoint["relabelings"]} == {
        "lipsync_dev_model",
        "lipsync_dev_gpu_product",
    }


def _granted(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


@needs_helm
def test_namespaced_mode_grants_model_rights_only_in_the_watched_namespaces() -> None:
    docs = render("--set", "watchNamespaces={team-a,team-b}")
    [cluster_role] = by_kind(docs, "ClusterRole")
    # Cluster-wide: reads of nodes, pods (GPUs other pods hold) and the CRD, nothing else.
    assert _granted(cluster_role) == {
        ("", "nodes"): {"get", "list", "watch"},
        ("", "pods"): {"get", "list", "watch"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    }
    roles = {r["metadata"]["namespace"]: r for r in by_kind(docs, "Role")}
    assert set(roles) == {"team-a", "team-b", "lipsync-system"}  # the last: the election Lease
    for namespace in ("team-a", "team-b"):
        granted = _granted(roles[namespace])
        assert granted[("apps", "deployments")] >= {"create", "patch", "delete"}
        assert granted[("networking.k8s.io", "networkpolicies")] >= {"create", "patch"}
        assert ("", "nodes") not in granted
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(docs, "RoleBinding")}
    assert bindings["team-a"]["roleRef"]["name"] == roles["team-a"]["metadata"]["name"]
    assert bindings["team-a"]["subjects"][0]["namespace"] == "lipsync-system"
    # Cluster-wide mode: one ClusterRole with both; kopf needs no namespace list in either.
    [everywhere] = by_kind(render(), "ClusterRole")
    assert _granted(everywhere) == {**_granted(cluster_role), **_granted(roles["team-a"])}


@needs_helm
def test_watched_namespaces_are_names_not_patterns() -> None:
    assert "watchNamespaces" in render_error("--set", "watchNamespaces={team-*}")


@needs_helm
def test_security_values_reach_the_operator_environment() -> None:
    docs = render(
        "--set", "sources.allowedHostPaths={/srv/avatars,/data}",
        "--set", "images.allowOverrides=true",
        "--set", "images.trustedBuilders={r.example/b:1}",
        "--set", "limits.gpusPerModel=16",
        "--set", "networkPolicy.grpcFromNamespaces={web}",
        "--set", "networkPolicy.metricsNamespace=prometheus",
    )  # fmt: skip
    config = OperatorConfig.from_env(_operator_env(docs))
    assert config.allowed_host_paths == ("/srv/avatars", "/data")
    assert config.allow_image_overrides
    assert config.trusted_builder_images == ("r.example/b:1",)
    assert config.max_gpus_per_model == 16
    assert config.network_policy
    assert config.grpc_client_namespaces == ("web",)
    assert config.metrics_namespace == "prometheus"
    # Defaults: no file://, no overrides, 8 GPUs per model, a policy with metrics from monitoring.
    defaults = OperatorConfig.from_env(_operator_env(render()))
    assert defaults.allowed_host_paths == ()
    assert not defaults.allow_image_overrides
    assert defaults.max_gpus_per_model == 8
    assert defaults.metrics_namespace == "monitoring"


@needs_helm
def test_namespaced_keda_grants_scaledobjects_in_the_watched_namespaces_only() -> None:
    docs = render(*KEDA_VALUES, "--set", "watchNamespaces={team-a}")
    assert _scaler_rules(docs) == []  # not cluster-wide
    roles = {r["metadata"]["namespace"]: r for r in by_kind(docs, "Role")}
    assert _granted(roles["team-a"])[("keda.sh", "scaledobjects")] >= {"list", "watch", "create"}
