"""How server pods see the avatar assets named by a URI."""

from __future__ import annotations

from urllib.parse import urlsplit

from lipsync_core.errors import LipSyncError
from lipsync_operator.manifests.common import Manifest


class UnsupportedSourceError(LipSyncError):
    """A URI scheme the server pods cannot mount."""


def avatar_volume(uri: str, mount_path: str) -> tuple[Manifest, Manifest]:
    """(volume, volumeMount) for ``file:///node/path`` (hostPath) or ``pvc://claim/sub/path``."""
    parts = urlsplit(uri)
    mount: Manifest = {"name": "avatar", "mountPath": mount_path, "readOnly": True}
    if parts.scheme == "file":
        return {"name": "avatar", "hostPath": {"path": parts.path, "type": "Directory"}}, mount
    if parts.scheme == "pvc" and parts.netloc:
        sub_path = parts.path.strip("/")
        if sub_path:
            mount["subPath"] = sub_path
        volume = {
            "name": "avatar",
            "persistentVolumeClaim": {"claimName": parts.netloc, "readOnly": True},
        }
        return volume, mount
    raise UnsupportedSourceError(
        f"avatar.uri {uri!r}: server pods mount file:// (node path) or pvc://<claim>/<path>; "
        f"copy the avatar to a volume for scheme {parts.scheme}://"
    )
