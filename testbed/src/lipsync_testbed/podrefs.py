"""Container environment from the API: `env` values (fieldRef, configMapKeyRef, secretKeyRef)
and `envFrom` sources, resolved the way a kubelet does when it starts a container."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed.podenv import expand, field_value


def _namespace(pod: client.V1Pod) -> str:
    return (pod.metadata.namespace if pod.metadata else None) or "default"


def env_var_value(
    core: client.CoreV1Api, pod: client.V1Pod, var: client.V1EnvVar, env: Mapping[str, str]
) -> str:
    """One `env` entry; a plain value has `$(VAR)` expanded against `env` (the ones before)."""
    source = var.value_from
    if source is None:
        return expand(var.value or "", env)
    if source.field_ref is not None:
        return field_value(pod, source.field_ref.field_path)
    if source.config_map_key_ref is not None:
        ref = source.config_map_key_ref
        cm = core.read_namespaced_config_map(ref.name or "", _namespace(pod))
        return (cm.data or {}).get(ref.key, "")
    if source.secret_key_ref is not None:
        sref = source.secret_key_ref
        secret = core.read_namespaced_secret(sref.name or "", _namespace(pod))
        raw = (secret.data or {}).get(sref.key, "")
        return base64.b64decode(raw).decode("utf-8", errors="replace")
    raise ValueError(f"env {var.name}: unsupported valueFrom")


def env_from(
    core: client.CoreV1Api, pod: client.V1Pod, source: client.V1EnvFromSource
) -> dict[str, str]:
    """The variables of one `envFrom` entry (ConfigMap or Secret, with its prefix)."""
    prefix = source.prefix or ""
    ref = source.config_map_ref or source.secret_ref
    try:
        if source.config_map_ref is not None:
            cm = core.read_namespaced_config_map(source.config_map_ref.name or "", _namespace(pod))
            return {prefix + k: v for k, v in (cm.data or {}).items()}
        if source.secret_ref is not None:
            secret = core.read_namespaced_secret(source.secret_ref.name or "", _namespace(pod))
            return {
                prefix + k: base64.b64decode(v).decode(errors="replace")
                for k, v in (secret.data or {}).items()
            }
    except ApiException as exc:
        if exc.status == 404 and ref is not None and ref.optional:
            return {}
        raise
    return {}
