"""``pvc://<claim>/<path>`` URIs: a file on a PersistentVolumeClaim, mounted where pods read it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

PVC_SCHEME = "pvc"
PVC_ROOT_ENV = "LIPSYNC_PVC_ROOT"  # where a pod finds its claims, one directory per claim
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
