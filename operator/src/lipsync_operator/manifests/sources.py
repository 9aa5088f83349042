"""How pods see the files URIs name: avatars (servers), models and calibration data (builds)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from lipsync_contract.errors import LipSyncError
from lipsync_contract.pvc import (
    DEFAULT_PVC_ROOT,
    PVC_MOUNTS_ENV,
    PVC_ROOT_ENV,
    format_pvc_mounts,
    parse_pvc_uri,
)
from lipsync_operator.manifests.common import Manifest


class UnsupportedSourceError(LipSyncError):
    """A URI scheme the server pods cannot mount."""


def avatar_volume(uri: str, mount_path: str) -> tuple[Manifest, Manifest]:
    """(volume, volumeMount) for ``file:///node/path`` (hostPath) or ``pvc://claim/sub/path``."""
    parts = urlsplit(uri)
    mount: Manifest = {"name": "avatar", "mountPath": mount_path, "readOnly": True}
    if parts.scheme == "file":
        return {"name": "avatar", "hostPath": {"path": parts.path, "type": "Directory"}}, mount
    ref = parse_pvc_uri(uri)
    if ref is not None:
        if ref.path:
            mount["subPath"] = ref.path
        volume = {
            "name": "avatar",
            "persistentVolumeClaim": {"claimName": ref.claim, "readOnly": True},
        }
        return volume, mount
    raise UnsupportedSourceError(
        f"avatar.uri {uri!r}: server pods mount file:// (node path) or pvc://<claim>/<path>; "
        f"copy the avatar to a volume for scheme {parts.scheme}://"
    )


def source_claims(uris: Iterable[str]) -> list[str]:
    """The claims named by ``pvc://<claim>/<path>`` URIs, sorted, each once."""
    return sorted({ref.claim for ref in map(parse_pvc_uri, uris) if ref is not None})


def build_source_mounts(
    uris: Iterable[str],
) -> tuple[list[Manifest], list[Manifest], list[Manifest]]:
    """(volumes, volumeMounts, env) so the builder reads ``pvc://`` URIs from mounted claims.

    Each claim is mounted read-only at ``/mnt/pvc/<claim>``; the builder resolves the URI there
    (``LIPSYNC_PVC_MOUNTS``, or ``LIPSYNC_PVC_ROOT``), while the engine key keeps the URI.
    """
    volumes: list[Manifest] = []
    mounts: list[Manifest] = []
    paths: dict[str, str] = {}
    for index, claim in enumerate(source_claims(uris)):
        name = f"source-{index}"
        volumes.append(
            {"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        paths[claim] = f"{DEFAULT_PVC_ROOT}/{claim}"
        mounts.append({"name": name, "mountPath": paths[claim], "readOnly": True})
    env = []
    if volumes:
        env = [
            {"name": PVC_ROOT_ENV, "value": DEFAULT_PVC_ROOT},
            {"name": PVC_MOUNTS_ENV, "value": format_pvc_mounts(paths)},
        ]
    return volumes, mounts, env
