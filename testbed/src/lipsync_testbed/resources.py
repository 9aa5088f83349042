"""Small API helpers the cluster tests share."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed.waiting import wait_for

APPLY_PATCH = "application/apply-patch+yaml"


def create_namespace(
    api: client.ApiClient,
    prefix: str = "t",
    timeout: float = 30.0,
    *,
    labels: Mapping[str, str] | None = None,
    exact: bool = False,
) -> str:
    """Create a uniquely named namespace (`prefix` itself with `exact`) and wait for its
    default service account."""
    core = client.CoreV1Api(api)
    name = prefix if exact else f"{prefix}-{uuid.uuid4().hex[:8]}"
    metadata = client.V1ObjectMeta(name=name, labels=dict(labels or {}))
    core.create_namespace(client.V1Namespace(metadata=metadata))

    def has_default_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    wait_for(has_default_sa, timeout=timeout, description=f"default service account in {name}")
    return name


def delete_if_present(delete: Callable[[], object]) -> None:
    """Call an API delete; an object already gone is fine."""
    try:
        delete()
    except ApiException as exc:
        if exc.status != 404:
            raise


def delete_and_wait(
    delete: Callable[[], object],
    read: Callable[[], object],
    *,
    description: str,
    timeout: float,
) -> None:
    """Delete an object (already gone is fine) and wait until reading it answers 404."""
    delete_if_present(delete)

    def gone() -> bool:
        try:
            read()
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(gone, timeout=timeout, interval=0.5, description=f"{description} deleted")


def delete_namespace(api: client.ApiClient, name: str, timeout: float = 120.0) -> None:
    """Delete a namespace and wait until it is gone (a namespace of the same name can be
    created again only then)."""
    core = client.CoreV1Api(api)
    delete_and_wait(
        lambda: core.delete_namespace(name),
        lambda: core.read_namespace(name),
        description=f"namespace {name}",
        timeout=timeout,
    )


def apply_custom_object(
    api: client.ApiClient,
    body: Mapping[str, Any],
    *,
    plural: str,
    field_manager: str,
    force: bool = True,
) -> dict[str, Any]:
    """Server-side apply a namespaced custom object and return the stored object."""
    group, _, version = str(body["apiVersion"]).rpartition("/")
    meta = body["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    custom = client.CustomObjectsApi(api)
    result = custom.patch_namespaced_custom_object(
        group,
        version,
        namespace,
        plural,
        name,
        dict(body),
        field_manager=field_manager,
        force=force,
        _content_type=APPLY_PATCH,
    )
    if not isinstance(result, dict):
        # The generated client only decodes 200; an apply that creates answers 201.
        result = custom.get_namespaced_custom_object(group, version, namespace, plural, name)
    if not isinstance(result, dict):
        raise TypeError(f"unexpected apply result for {namespace}/{name}: {result!r}")
    return result


def prebound_claim(
    api: client.ApiClient,
    namespace: str,
    claim: str,
    host_path: str,
    *,
    access_mode: str = "ReadWriteMany",
    timeout: float = 60.0,
) -> str:
    """A claim bound to a hostPath PersistentVolume `<namespace>-<claim>`, as a storage admin
    provides it: a static volume reserved for the claim (claimRef) and a claim naming it, bound by
    the controller-manager's volume binder. Returns the volume's name; the volume outlives the
    namespace, so delete it afterwards."""
    core = client.CoreV1Api(api)
    volume = f"{namespace}-{claim}"
    core.create_persistent_volume(
        client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name=volume),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": "1Gi"},
                access_modes=[access_mode],
                storage_class_name="",
                persistent_volume_reclaim_policy="Retain",
                host_path=client.V1HostPathVolumeSource(path=host_path),
                claim_ref=client.V1ObjectReference(namespace=namespace, name=claim),
            ),
        )
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=claim),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=[access_mode],
                storage_class_name="",
                volume_name=volume,
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )

    def bound() -> bool:
        found = core.read_namespaced_persistent_volume_claim(claim, namespace)
        return found.status is not None and found.status.phase == "Bound"

    wait_for(bound, timeout=timeout, description=f"claim {namespace}/{claim} bound")
    return volume
