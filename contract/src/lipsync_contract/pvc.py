"""``pvc://<claim>/<path>`` URIs: a file on a PersistentVolumeClaim, mounted where pods read it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

PVC_SCHEME = "pvc"
PVC_ROOT_ENV = "LIPSYNC_PVC_ROOT"  # where a pod finds its claims, one directory per claim
# Each claim's own mount path, "claim=path,claim=path": each path stands alone in the value, so
# anything that relocates a pod's mounts (a test bed's kubelet) can rewrite it.
PVC_MOUNTS_ENV = "LIPSYNC_PVC_MOUNTS"
DEFAULT_PVC_ROOT = "/mnt/pvc"


@dataclass(frozen=True)
class PvcRef:
    claim: str
    path: str  # inside the claim, no leading or trailing slash; "" for the claim's root


def is_pvc_uri(uri: str) -> bool:
    return urlsplit(uri).scheme == PVC_SCHEME


def parse_pvc_uri(uri: str) -> PvcRef | None:
    """The claim and path of ``pvc://<claim>/<path>``; None for other schemes or no claim."""
    parts = urlsplit(uri)
    if parts.scheme != PVC_SCHEME or not parts.netloc:
        return None
    return PvcRef(parts.netloc, parts.path.strip("/"))


def format_pvc_mounts(mounts: dict[str, str]) -> str:
    return ",".join(f"{claim}={path}" for claim, path in sorted(mounts.items()))


def parse_pvc_mounts(value: str) -> dict[str, str]:
    """``claim=path,claim=path`` -> {claim: path}; malformed entries are left out."""
    pairs = (item.split("=", 1) for item in value.split(",") if "=" in item)
    return {claim.strip(): path.strip() for claim, path in pairs if claim.strip() and path.strip()}
