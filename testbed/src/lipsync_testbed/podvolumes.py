"""A local pod's volumes as host directories, the way a kubelet would set them up.

- emptyDir: `<pod dir>/volumes/<name>`, deleted with the pod.
- hostPath `P`: the longest matching prefix in `host_paths` (pod-side prefix -> host
  directory), else `<node root>/P` (one fake node filesystem shared by every local pod).
- persistentVolumeClaim: `claim_dirs["<namespace>/<claim>"]` if given; else the bound
  PersistentVolume's hostPath (mapped as above), else `<node root>/volumes/<pv name>`.
  A claim that is not Bound keeps the pod waiting, as a kubelet would.
- configMap, secret, downwardAPI and projected (serviceAccountToken, configMap,
  secret, downwardAPI) volumes: files written once into `<pod dir>/volumes/<name>`;
  later changes are not propagated. A projected serviceAccountToken is a real
  TokenRequest token for the pod's ServiceAccount, bound to the pod.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed.podenv import field_value

DEFAULT_TOKEN_SECONDS = 3607


def token_lifetime(pod: client.V1Pod) -> float | None:
    """The shortest lifetime of the pod's projected service-account tokens (None: none)."""
    spec = pod.spec or client.V1PodSpec(containers=[])
    lifetimes = [
        max(600, source.service_account_token.expiration_seconds or DEFAULT_TOKEN_SECONDS)
        for volume in spec.volumes or []
        if volume.projected is not None
        for source in volume.projected.sources or []
        if source.service_account_token is not None
    ]
    return float(min(lifetimes)) if lifetimes else None


class VolumeNotReadyError(RuntimeError):
    """A volume's source does not exist yet (claim not bound, ConfigMap missing, ...)."""


@dataclass(frozen=True)
class HostLayout:
    """Where volumes live on the host."""

    node_root: Path
    host_paths: Mapping[str, Path] = field(default_factory=dict)
    claim_dirs: Mapping[str, Path] = field(default_factory=dict)

    def host_path(self, path: str) -> Path:
        """The host directory behind a hostPath volume's `path`."""
        for prefix in sorted(self.host_paths, key=len, reverse=True):
            stripped = prefix.rstrip("/")
            if path == stripped or path.startswith(stripped + "/"):
                rest = path[len(stripped) :].lstrip("/")
                base = Path(self.host_paths[prefix])
                return base / rest if rest else base
        return self.node_root / path.lstrip("/")


def _write_files(target: Path, files: Mapping[str, bytes]) -> None:
    for relative, data in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _select(
    data: Mapping[str, bytes], items: list[client.V1KeyToPath] | None, source: str
) -> dict[str, bytes]:
    if not items:
        return dict(data)
    selected = {}
    for item in items:
        if item.key not in data:
            raise VolumeNotReadyError(f"{source} has no key {item.key!r}")
        selected[item.path] = data[item.key]
    return selected


def _keyed_files(
    read: Callable[[], dict[str, bytes]],
    items: list[client.V1KeyToPath] | None,
    optional: bool,
    source: str,
) -> dict[str, bytes]:
    """A ConfigMap's or Secret's keys as files; a missing optional source is empty."""
    try:
        data = read()
    except ApiException as exc:
        if exc.status == 404 and optional:
            return {}
        if exc.status == 404:
            raise VolumeNotReadyError(f"{source} not found") from exc
        raise
    return _select(data, items, source)


class VolumeBuilder:
    """Materialises one pod's volumes (API reads are the only side effects besides files)."""

    def __init__(self, core: client.CoreV1Api, layout: HostLayout) -> None:
        self.core = core
        self.layout = layout

    def build(self, pod: client.V1Pod, pod_dir: Path) -> dict[str, Path]:
        spec = pod.spec or client.V1PodSpec(containers=[])
        dirs: dict[str, Path] = {}
        for volume in spec.volumes or []:
            dirs[volume.name] = self._volume(pod, volume, pod_dir / "volumes" / volume.name)
        return dirs

    def refresh_tokens(self, pod: client.V1Pod, dirs: Mapping[str, Path]) -> None:
        """Replace each projected service-account token with a fresh one, as a kubelet
        does before 80 % of its lifetime (clients re-read the file)."""
        spec = pod.spec or client.V1PodSpec(containers=[])
        for volume in spec.volumes or []:
            if volume.projected is None or volume.name not in dirs:
                continue
            for source in volume.projected.sources or []:
                token = source.service_account_token
                if token is None:
                    continue
                path = dirs[volume.name] / token.path
                fresh = path.with_name(path.name + ".new")
                fresh.write_text(self._token(pod, token), encoding="utf-8")
                fresh.replace(path)

    def _volume(self, pod: client.V1Pod, volume: client.V1Volume, own: Path) -> Path:
        if volume.host_path is not None:
            path = self.layout.host_path(volume.host_path.path)
            path.mkdir(parents=True, exist_ok=True)
            return path
        if volume.persistent_volume_claim is not None:
            path = self._claim_dir(pod, volume.persistent_volume_claim.claim_name)
            path.mkdir(parents=True, exist_ok=True)
            return path
        files: dict[str, bytes]
        if volume.empty_dir is not None:
            files = {}
        elif volume.config_map is not None:
            files = self._config_map(
                pod,
                volume.config_map.name or "",
                volume.config_map.items,
                bool(volume.config_map.optional),
            )
        elif volume.secret is not None:
            files = self._secret(
                pod,
                volume.secret.secret_name or "",
                volume.secret.items,
                bool(volume.secret.optional),
            )
        elif volume.downward_api is not None:
            files = self._downward(pod, volume.downward_api.items)
        elif volume.projected is not None:
            files = {}
            for source in volume.projected.sources or []:
                files.update(self._projection(pod, source))
        else:
            raise ValueError(f"volume {volume.name}: unsupported volume source")
        if own.exists():
            shutil.rmtree(own)
        own.mkdir(parents=True)
        _write_files(own, files)
        return own

    def _namespace(self, pod: client.V1Pod) -> str:
        return (pod.metadata.namespace if pod.metadata else None) or "default"

    def _claim_dir(self, pod: client.V1Pod, claim: str) -> Path:
        namespace = self._namespace(pod)
        if f"{namespace}/{claim}" in self.layout.claim_dirs:
            return Path(self.layout.claim_dirs[f"{namespace}/{claim}"])
        try:
            pvc = self.core.read_namespaced_persistent_volume_claim(claim, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise VolumeNotReadyError(f"persistentvolumeclaim {claim!r} not found") from exc
            raise
        volume_name = pvc.spec.volume_name if pvc.spec else None
        phase = pvc.status.phase if pvc.status else None
        if not volume_name or phase != "Bound":
            raise VolumeNotReadyError(f"persistentvolumeclaim {claim!r} is not bound")
        pv = self.core.read_persistent_volume(volume_name)
        if pv.spec is not None and pv.spec.host_path is not None:
            return self.layout.host_path(pv.spec.host_path.path)
        return self.layout.node_root / "volumes" / volume_name

    def _config_map(
        self, pod: client.V1Pod, name: str, items: list[client.V1KeyToPath] | None, optional: bool
    ) -> dict[str, bytes]:
        def read() -> dict[str, bytes]:
            cm = self.core.read_namespaced_config_map(name, self._namespace(pod))
            data = {k: v.encode() for k, v in (cm.data or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
            return data

        return _keyed_files(read, items, optional, f"configmap {name!r}")

    def _secret(
        self, pod: client.V1Pod, name: str, items: list[client.V1KeyToPath] | None, optional: bool
    ) -> dict[str, bytes]:
        def read() -> dict[str, bytes]:
            secret = self.core.read_namespaced_secret(name, self._namespace(pod))
            return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

        return _keyed_files(read, items, optional, f"secret {name!r}")

    @staticmethod
    def _downward(
        pod: client.V1Pod, items: list[client.V1DownwardAPIVolumeFile] | None
    ) -> dict[str, bytes]:
        files = {}
        for item in items or []:
            if item.field_ref is None:
                raise ValueError(f"downwardAPI item {item.path}: only fieldRef is supported")
            files[item.path] = field_value(pod, item.field_ref.field_path).encode()
        return files

    def _projection(self, pod: client.V1Pod, source: client.V1VolumeProjection) -> dict[str, bytes]:
        if source.service_account_token is not None:
            token = source.service_account_token
            return {token.path: self._token(pod, token).encode()}
        if source.config_map is not None:
            cm = source.config_map
            return self._config_map(pod, cm.name or "", cm.items, bool(cm.optional))
        if source.secret is not None:
            sec = source.secret
            return self._secret(pod, sec.name or "", sec.items, bool(sec.optional))
        if source.downward_api is not None:
            return self._downward(pod, source.downward_api.items)
        raise ValueError("unsupported projected volume source")

    def _token(self, pod: client.V1Pod, source: client.V1ServiceAccountTokenProjection) -> str:
        meta = pod.metadata or client.V1ObjectMeta()
        spec = pod.spec or client.V1PodSpec(containers=[])
        account = spec.service_account_name or "default"
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[source.audience] if source.audience else [],
                expiration_seconds=max(600, source.expiration_seconds or DEFAULT_TOKEN_SECONDS),
                bound_object_ref=client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=meta.name, uid=meta.uid
                ),
            )
        )
        try:
            issued = self.core.create_namespaced_service_account_token(
                account, self._namespace(pod), request
            )
        except ApiException as exc:
            if exc.status == 404:
                raise VolumeNotReadyError(f"serviceaccount {account!r} not found") from exc
            raise
        if issued.status is None or not issued.status.token:
            raise RuntimeError(f"no token issued for serviceaccount {account!r}")
        return str(issued.status.token)
