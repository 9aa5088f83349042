"""Cluster writes for the handlers: server-side apply, delete, patch status.

Reads come from the watch-fed indexes (``indexes``/``clusterview``), never from lists here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient as _DynamicClient

from lipsync_contract.api import GROUP, PLURAL, VERSION
from lipsync_operator import naming
from lipsync_operator.desired import ChildRef
from lipsync_operator.manifests.common import Manifest

log = logging.getLogger(__name__)

# The kubernetes client is untyped; these names keep the Any at the boundary.
config: Any = kube_config
DynamicClient: Any = _DynamicClient

HANDOVER_MANAGER = f"{naming.MANAGER}-handover"
# No call may wait longer than this: a reconcile runs under its model's lock, so one hung call
# would hold that model for good (and enough of them, every worker thread).
API_TIMEOUT_SECONDS = 30.0


def api_message(exc: ApiException) -> str:
    """The API server's own message (from its Status body), else the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc.reason or "")


def load_kube_config() -> None:
    """In-cluster credentials when running in a pod, else the current kubeconfig."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


class BoundedApiClient(client.ApiClient):
    """An ApiClient whose calls time out (the client's default is to wait forever) unless a call
    sets its own timeout, over connections with TCP keepalive (a dead API server is noticed),
    and are not retried underneath (urllib3 would try a GET four times)."""

    def __init__(
        self, timeout: float = API_TIMEOUT_SECONDS, configuration: Any | None = None
    ) -> None:
        settings = configuration or client.Configuration.get_default_copy()
        settings.keep_alive = True
        # No silent retries below the timeout: the callers retry (a reconcile, the election).
        settings.retries = 0
        super().__init__(settings)
        self.timeout = timeout

    def call_api(
        self,
        method: str,
        url: str,
        header_params: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        return super().call_api(
            method, url, header_params, body, post_params, _request_timeout or self.timeout
        )


@dataclass
class Kube:
    """One API connection and the resource handles the operator uses."""

    dynamic: Any  # kubernetes.dynamic.DynamicClient

    @classmethod
    def connect(cls) -> Kube:
        load_kube_config()
        return cls(DynamicClient(BoundedApiClient()))

    def _resource(self, api_version: str, kind: str) -> Any:
        return self.dynamic.resources.get(api_version=api_version, kind=kind)

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
