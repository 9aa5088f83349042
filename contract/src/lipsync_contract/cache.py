"""The engine cache's layout: ``ROOT/engines/<key hex>/{artifact, manifest.json}``.

ROOT is a local path (a mounted volume) or a URL. The builder writes entries
(``lipsync_engine_builder.cache``); the same names locate an artifact wherever it is read.
"""

from __future__ import annotations

from lipsync_contract.enginekey import KEY_PREFIX
from lipsync_contract.manifest import MANIFEST_NAME, Manifest
from lipsync_contract.result import BuildResult

ENGINES_DIR = "engines"


def key_hex(key: str) -> str:
    return key.removeprefix(KEY_PREFIX)


def entry_dir(key: str) -> str:
    """An entry's directory relative to the root (a volume's subPath)."""
    return f"{ENGINES_DIR}/{key_hex(key)}"


def entry_uri(root: str, key: str, name: str) -> str:
    """URI (or path) of the file ``name`` of ``key``'s entry under ``root``."""
    return f"{root.rstrip('/')}/{entry_dir(key)}/{name}"


def manifest_uri(root: str, key: str) -> str:
    return entry_uri(root, key, MANIFEST_NAME)


def result_from_manifest(
    manifest: Manifest, root: str, *, cache_hit: bool, seconds: float, reason: str
) -> BuildResult:
    """A Ready result for a published entry; ``artifact`` is the artifact's URI under ``root``."""
    return BuildResult(
        key=manifest.key,
        state="Ready",
        reason=reason,
        psnr_db=round(manifest.accuracy.psnr_db, 2),
        max_abs_error=round(manifest.accuracy.max_abs_error, 6),
        frames_per_second=manifest.best_frames_per_second(),
        build_seconds=round(seconds, 2),
        artifact=entry_uri(root, manifest.key, manifest.artifact),
        artifact_sha256=manifest.artifact_sha256,
        cache_hit=cache_hit,
    )
