"""Build Jobs the operator made, told apart from look-alikes: an HMAC over what the Job runs.

A model follows another model's build of the same engine key, possibly in another namespace, and
takes the engine its result names. Labels, annotations and owner references are anyone's to
write, so a Job made by hand to look like a build (same labels, same key annotation, a result of
its own) would otherwise be followed and its artifact served. The operator signs every build Job
it applies with a key only its replicas hold (the chart's Secret, mounted as a file) and follows
another model's Job only when the signature matches the Job as the API server holds it.

The signature covers the Job's namespace, name and engine key, and what its pods run and mount:
containers (image, command, args, env values, mounts) and volumes (their sources). Fields the API
server fills in by default (pull policy, termination paths, a volume's mode or read-only flag) are
left out, so the Job read back verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lipsync_operator import naming

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]
ANNOTATION_SIGNATURE = "lipsync.dev/build-signature"


def _container(container: Obj) -> list[Any]:
    env = [[e.get("name"), e.get("value"), e.get("valueFrom")] for e in container.get("env") or []]
    mounts = [
        [m.get("name"), m.get("mountPath"), m.get("subPath", "")]
        for m in container.get("volumeMounts") or []
    ]
    return [
        container.get("name"),
        container.get("image"),
        container.get("command") or [],
        container.get("args") or [],
        env,
        mounts,
    ]


# What names a volume source's content; its flags, modes and sizes are left out (the API server
# defaults some and normalizes quantities).
_SOURCE_IDENTITY = ("claimName", "path", "server", "secretName", "name", "driver", "reference")


def _volume(volume: Obj) -> list[Any]:
    described: list[Any] = [volume.get("name")]
    for source in sorted(key for key in volume if key != "name"):
        fields = volume[source] if isinstance(volume[source], Mapping) else {}
        described.append([source, [[k, fields[k]] for k in _SOURCE_IDENTITY if k in fields]])
    return described


def _pod(template: Obj) -> list[Any]:
    spec: Obj = template.get("spec") or {}
    containers: Sequence[Obj] = [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
    ]
    return [
        [_container(c) for c in containers],
        [_volume(v) for v in spec.get("volumes") or []],
    ]


def _payload(job: Obj) -> bytes:
    meta: Obj = job.get("metadata") or {}
    annotations: Obj = meta.get("annotations") or {}
    template: Obj = (job.get("spec") or {}).get("template") or {}
    described = [
        meta.get("namespace", ""),
        meta.get("name", ""),
        annotations.get(naming.ANNOTATION_ENGINE_KEY, ""),
        _pod(template),
    ]
    return json.dumps(described, separators=(",", ":"), sort_keys=True).encode()


class BuildSigner:
    """Signs build Jobs and checks them, with one key shared by the operator's replicas."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a build signing key needs at least 16 bytes")
        self._key = key

    @classmethod
    def from_file(cls, path: Path | None) -> BuildSigner:
        """The key in ``path``; without one, a key of this process only (builds it signed are
        not followed after a restart: a model then builds the same key again)."""
        if path is None:
            log.warning("no build signing key file: signing with a key of this process only")
            return cls(secrets.token_bytes(32))
        return cls(path.read_bytes().strip())

    def signature(self, job: Obj) -> str:
        return hmac.new(self._key, _payload(job), hashlib.sha256).hexdigest()

    def signed(self, job: Obj) -> dict[str, Any]:
        """``job`` with its signature annotation (the Job's, not its pods')."""
        meta = dict(job.get("metadata") or {})
        meta["annotations"] = {
            **(meta.get("annotations") or {}),
            ANNOTATION_SIGNATURE: self.signature(job),
        }
        return {**job, "metadata": meta}

    def verified(self, job: Obj) -> bool:
        annotations: Obj = (job.get("metadata") or {}).get("annotations") or {}
        claimed = str(annotations.get(ANNOTATION_SIGNATURE, "")).encode()
        return bool(claimed) and hmac.compare_digest(claimed, self.signature(job).encode())
