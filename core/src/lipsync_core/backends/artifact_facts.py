"""What the engine builder recorded about an artifact, read back by the backends.

A published artifact sits next to its ``manifest.json`` in the cache (``engines/<key>/``); the
precision a backend reports comes from there, not from guessing at I/O dtypes. Read as plain
JSON, so a manifest of another schema version still yields what it has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipsync_contract.kinds import Precision
from lipsync_contract.manifest import MANIFEST_NAME

_PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ArtifactFacts:
    precision: Precision | None = None
    backend: str = ""
    runtime: str = ""
    compute_capability: str = ""


def facts_from_manifest(document: dict[str, Any]) -> ArtifactFacts:
    """The fields a backend needs from a manifest document; unknown values are left empty."""
    precision = document.get("precision")
    key_inputs = document.get("key_inputs") or {}
    return ArtifactFacts(
        precision=precision if precision in _PRECISIONS else None,
        backend=str(document.get("backend", "")),
        runtime=str(document.get("runtime", "")),
        compute_capability=str(key_inputs.get("compute_capability", "")),
    )


def artifact_facts(artifact: Path) -> ArtifactFacts:
    """Facts from the manifest beside ``artifact`` when it names that artifact, else empty."""
    path = artifact.parent / MANIFEST_NAME
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return ArtifactFacts()
    if not isinstance(document, dict) or document.get("artifact") != artifact.name:
        return ArtifactFacts()
    return facts_from_manifest(document)
