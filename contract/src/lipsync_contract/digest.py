"""File digests: what the builder records for an artifact, and what a server checks before it
loads one."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lipsync_contract.errors import LipSyncError


class ArtifactDigestError(LipSyncError):
    """A file's bytes are not the bytes that were built."""


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def verify_sha256(path: Path, expected: str | None, what: str) -> None:
    """Raise ArtifactDigestError unless ``path`` has the hex sha256 ``expected`` (None: skip)."""
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise ArtifactDigestError(
            f"{what} {path} has sha256 {actual[:16]}..., not the {expected[:16]}... it was built "
            "with: the file changed after its build, refusing to load it"
        )
