"""Cluster I/O for the handlers: read observed state, server-side apply, delete, patch status."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient as _DynamicClient

from lipsync_core.api import GROUP, KIND, PLURAL, VERSION
from lipsync_operator import naming
from lipsync_operator.config import OperatorConfig
from lipsync_operator.desired import ChildRef
from lipsync_operator.manifests.common import Manifest
from lipsync_operator.observed import (
    BuildJob,
    GpuNode,
    Observed,
    ServerDeployment,
    build_job,
    gpu_node,
    gpu_requests_by_node,
    pods_by_node,
    server_deployment,
)

log = logging.getLogger(__name__)

# The kubernetes client is untyped; these names keep the Any at the boundary.
config: Any = kube_config
DynamicClient: Any = _DynamicClient

HANDOVER_MANAGER = f"{naming.MANAGER}-handover"


def load_kube_config() -> None:
    """In-cluster credentials when running in a pod, else the current kubeconfig."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


@dataclass
class Kube:
    """One API connection and the resource handles the operator uses."""

    dynamic: Any  # kubernetes.dynamic.DynamicClient

    @classmethod
    def connect(cls) -> Kube:
        load_kube_config()
        return cls(DynamicClient(client.ApiClient()))

    def _resource(self, api_version: str, kind: str) -> Any:
        return self.dynamic.resources.get(api_version=api_version, kind=kind)

    def _list(self, api_version: str, kind: str, **kwargs: Any) -> list[dict[str, Any]]:
        items = self._resource(api_version, kind).get(**kwargs).to_dict().get("items") or []
        return list(items)

    def gpu_nodes(self, gpu_resource: str, autoscaled_label: str = "") -> list[GpuNode]:
        nodes = (gpu_node(obj, gpu_resource, autoscaled_label) for obj in self._list("v1", "Node"))
        return [node for node in nodes if node is not None]

    def models(self) -> list[dict[str, Any]]:
        return self._list(f"{GROUP}/{VERSION}", KIND)

    def model(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self._resource(f"{GROUP}/{VERSION}", KIND).get(name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(found.to_dict())

    def observed(self, namespace: str, model: str, uid: str, settings: OperatorConfig) -> Observed:
        def owned(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                item
                for item in items
                if any(
                    ref.get("uid") == uid for ref in item["metadata"].get("ownerReferences") or []
                )
            ]

        selector = f"{naming.LABEL_MODEL}={naming.label_value(model)}"
        jobs: list[BuildJob] = []
        for job in owned(
            self._list("batch/v1", "Job", namespace=namespace, label_selector=selector)
        ):
            job_name = job["metadata"]["name"]
            pods = self._list(
                "v1", "Pod", namespace=namespace, label_selector=f"job-name={job_name}"
            )
            jobs.append(build_job(job, pods))
        deployments: list[ServerDeployment] = [
            server_deployment(obj)
            for obj in owned(
                self._list("apps/v1", "Deployment", namespace=namespace, label_selector=selector)
            )
        ]
        hpas = owned(
            self._list(
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                namespace=namespace,
                label_selector=selector,
            )
        )
        scaled_objects: list[dict[str, Any]] = []
        if settings.autoscaler == "keda":  # the chart grants ScaledObjects only then
            scaled_objects = owned(
                self._list(
                    "keda.sh/v1alpha1",
                    "ScaledObject",
                    namespace=namespace,
                    label_selector=selector,
                )
            )
        nodes = tuple(self.gpu_nodes(settings.gpu_resource, settings.autoscaled_node_label))
        others, serving = self._pods_on_gpu_nodes(
            {node.name for node in nodes}, namespace, model, settings.gpu_resource
        )
        return Observed(
            nodes=nodes,
            jobs=tuple(jobs),
            deployments=tuple(deployments),
            hpas=frozenset(h["metadata"]["name"] for h in hpas),
            scaled_objects=frozenset(s["metadata"]["name"] for s in scaled_objects),
            gpu_used_by_others=others,
            serving_pods_by_node=serving,
        )

    def _pods_on_gpu_nodes(
        self, nodes: set[str], namespace: str, model: str, gpu_resource: str
    ) -> tuple[dict[str, int], dict[str, int]]:
        """GPU units held per node by pods that are not this model's, and this model's server
        pods per node (not being deleted)."""
        pods = self._list(
            "v1", "Pod", field_selector="status.phase!=Succeeded,status.phase!=Failed"
        )
        label = naming.label_value(model)
        mine, others = [], []
        for pod in pods:
            meta = pod["metadata"]
            labels = meta.get("labels") or {}
            if meta.get("namespace") == namespace and labels.get(naming.LABEL_MODEL) == label:
                if labels.get(naming.LABEL_COMPONENT) == naming.COMPONENT_SERVER:
                    mine.append(pod)
            else:
                others.append(pod)
        return gpu_requests_by_node(others, gpu_resource, nodes), pods_by_node(mine, nodes)

    def apply(self, manifest: Manifest, manager: str = naming.MANAGER) -> None:
        """Server-side apply; the operator owns these fields and takes them back on conflict."""
        resource = self._resource(manifest["apiVersion"], manifest["kind"])
        resource_body = dict(manifest)
        self.dynamic.server_side_apply(
            resource,
            body=resource_body,
            namespace=manifest["metadata"].get("namespace"),
            field_manager=manager,
            force_conflicts=True,
        )

    def hand_over_replicas(self, deployment: Mapping[str, Any], replicas: int) -> None:
        """Apply only spec.replicas under a second manager so it survives the HPA taking over."""
        meta = deployment["metadata"]
        self.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                "spec": {"replicas": replicas},
            },
            manager=HANDOVER_MANAGER,
        )

    def delete(self, ref: ChildRef, namespace: str) -> None:
        try:
            self._resource(ref.api_version, ref.kind).delete(
                name=ref.name, namespace=namespace, body={"propagationPolicy": "Background"}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        client.CustomObjectsApi(self.dynamic.client).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )
