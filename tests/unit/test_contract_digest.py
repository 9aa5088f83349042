"""The digest a server checks before it loads an artifact."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lipsync_contract.digest import ArtifactDigestError, sha256_file, verify_sha256

pytestmark = pytest.mark.unit


def test_an_artifact_with_its_built_digest_loads_and_a_changed_one_is_refused(
    tmp_path: Path,
) -> None:
    engine = tmp_path / "engine.plan"
    engine.write_bytes(b"built bytes")
    built = hashlib.sha256(b"built bytes").hexdigest()
    assert sha256_file(engine) == built
    verify_sha256(engine, built, "model artifact")
    verify_sha256(engine, None, "model artifact")  # no digest given: not checked
    engine.write_bytes(b"built bytes, then changed")
    with pytest.raises(ArtifactDigestError, match=r"model artifact .*engine.plan has sha256 "):
        verify_sha256(engine, built, "model artifact")
