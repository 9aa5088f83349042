"""The content-addressed engine cache: ``ROOT/engines/<key-hex>/{artifact, manifest.json}``.

ROOT is a local path or any fsspec URL. The manifest is the commit marker: an entry without one
is incomplete and invisible to readers. Publishing is atomic. On a local file system the entry is
written in a temporary directory and renamed into place; elsewhere the artifact is uploaded under a
name derived from its own digest and the manifest is created exclusively (a conditional put), so
two builders racing on one key end with one published entry and both succeed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import ValidationError

from lipsync_contract.cache import ENGINES_DIR, entry_uri, key_hex
from lipsync_contract.enginekey import KEY_PREFIX
from lipsync_contract.manifest import MANIFEST_NAME, Manifest
from lipsync_engine_builder.errors import BadInputError, one_line

log = logging.getLogger(__name__)

TIMING_CACHES_DIR = "timing-caches"
TEMP_PREFIX = ".tmp-"
DEFAULT_GC_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class PublishOutcome:
    manifest: Manifest
    published: bool  # False: another builder published this key first


class EngineCache:
    """One cache root. Methods raise BadInputError when the root cannot be reached or written."""

    def __init__(self, root: str) -> None:
        self.root = root
        try:
            self._fs, self._root_path = fsspec.core.url_to_fs(root)
        except (ImportError, ValueError) as exc:
            raise BadInputError(f"cache {root}: unsupported location: {one_line(exc)}") from None
        self._local = isinstance(self._fs, LocalFileSystem)
        self._engines = f"{self._root_path.rstrip('/')}/{ENGINES_DIR}"

    def entry_path(self, key: str) -> str:
        return f"{self._engines}/{key_hex(key)}"

    def entry_uri(self, key: str, name: str) -> str:
        return entry_uri(self.root, key, name)

    def lookup(self, key: str) -> Manifest | None:
        """The published manifest for ``key``, or None (absent, incomplete or unreadable)."""
        path = f"{self.entry_path(key)}/{MANIFEST_NAME}"
        try:
            raw = self._fs.cat_file(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BadInputError(f"cache {self.root}: cannot read ({_os_reason(exc)})") from None
        try:
            return Manifest.model_validate_json(raw)
        except ValidationError:
            log.warning("cache entry %s has an unreadable manifest; ignoring it", path)
            return None

    def ensure_writable(self) -> None:
        """Probe the root with a small write, so an unwritable cache fails before any build."""
        probe = f"{self._engines}/{TEMP_PREFIX}probe-{uuid.uuid4().hex}"
        try:
            self._fs.makedirs(self._engines, exist_ok=True)
            self._fs.pipe_file(probe, b"")
            self._fs.rm_file(probe)
        except (OSError, PermissionError) as exc:
            raise BadInputError(f"cache {self.root} is not writable ({_os_reason(exc)})") from None

    def publish(self, artifact: Path, manifest: Manifest) -> PublishOutcome:
        existing = self.lookup(manifest.key)
        if existing is not None:
            return PublishOutcome(existing, published=False)
        if self._local:
            return self._publish_by_rename(artifact, manifest)
        return self._publish_by_conditional_put(artifact, manifest)

    def _publish_by_rename(self, artifact: Path, manifest: Manifest) -> PublishOutcome:
        engines = Path(self._engines)
        engines.mkdir(parents=True, exist_ok=True)
        temp = engines / f"{TEMP_PREFIX}{key_hex(manifest.key)}-{uuid.uuid4().hex}"
        temp.mkdir()
        try:
            shutil.copyfile(artifact, temp / manifest.artifact)
            (temp / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2))
            for path in (temp / manifest.artifact, temp / MANIFEST_NAME):
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
            os.rename(temp, self.entry_path(manifest.key))
        except OSError as exc:
            shutil.rmtree(temp, ignore_errors=True)
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            winner = self.lookup(manifest.key)
            if winner is None:
                raise
            return PublishOutcome(winner, published=False)
        return PublishOutcome(manifest, published=True)

    def _publish_by_conditional_put(self, artifact: Path, manifest: Manifest) -> PublishOutcome:
        entry = self.entry_path(manifest.key)
        artifact_path = f"{entry}/{manifest.artifact}"
        self._fs.makedirs(entry, exist_ok=True)
        self._fs.put_file(str(artifact), artifact_path)
        try:
            with self._fs.open(f"{entry}/{MANIFEST_NAME}", "xb") as handle:
                handle.write(manifest.model_dump_json(indent=2).encode())
        except FileExistsError:
            winner = self.lookup(manifest.key)
            if winner is None:
                raise
            if winner.artifact != manifest.artifact:
                self._fs.rm_file(artifact_path)
            return PublishOutcome(winner, published=False)
        return PublishOutcome(manifest, published=True)

    def read_timing_cache(self, name: str) -> bytes:
        """A saved TensorRT timing cache (empty if none); it only speeds builds up."""
        try:
            data: bytes = self._fs.cat_file(
                f"{self._root_path.rstrip('/')}/{TIMING_CACHES_DIR}/{name}"
            )
        except FileNotFoundError:
            return b""
        return data

    def write_timing_cache(self, name: str, data: bytes) -> None:
        directory = f"{self._root_path.rstrip('/')}/{TIMING_CACHES_DIR}"
        self._fs.makedirs(directory, exist_ok=True)
        temp = f"{directory}/{TEMP_PREFIX}{uuid.uuid4().hex}"
        self._fs.pipe_file(temp, data)
        self._fs.mv(temp, f"{directory}/{name}")

    def entries(self) -> list[Manifest]:
        """Published manifests, newest first."""
        manifests = []
        for name in self._list_names():
            if name.startswith(TEMP_PREFIX):
                continue
            manifest = self.lookup(KEY_PREFIX + name)
            if manifest is not None:
                manifests.append(manifest)
        return sorted(manifests, key=lambda m: m.created, reverse=True)

    def resolve(self, key_or_prefix: str) -> Manifest | None:
        """A manifest by full key, bare hex or a unique hex prefix."""
        wanted = key_hex(key_or_prefix)
        matches = [m for m in self.entries() if key_hex(m.key).startswith(wanted)]
        if len(matches) > 1:
            raise BadInputError(f"key prefix {key_or_prefix!r} matches {len(matches)} engines")
        return matches[0] if matches else None

    def gc(
        self, grace: timedelta = DEFAULT_GC_GRACE, max_age: timedelta | None = None
    ) -> list[str]:
        """Remove leftovers older than ``grace`` (temporary entries, entries without a manifest,
        artifacts no manifest names) and, with ``max_age``, published entries older than that."""
        now = time.time()
        removed: list[str] = []
        for name in self._list_names():
            path = f"{self._engines}/{name}"
            manifest = None if name.startswith(TEMP_PREFIX) else self.lookup(KEY_PREFIX + name)
            if manifest is None:
                if self._age_seconds(path, now) > grace.total_seconds():
                    self._fs.rm(path, recursive=True)
                    removed.append(path)
                continue
            created = datetime.fromisoformat(manifest.created)
            if max_age is not None and datetime.now(UTC) - created > max_age:
                self._fs.rm(path, recursive=True)
                removed.append(path)
                continue
            for child in self._fs.ls(path, detail=False):
                base = str(child).rstrip("/").rsplit("/", 1)[-1]
                if base not in (MANIFEST_NAME, manifest.artifact) and (
                    self._age_seconds(str(child), now) > grace.total_seconds()
                ):
                    self._fs.rm(str(child), recursive=True)
                    removed.append(str(child))
        return removed

    def _list_names(self) -> list[str]:
        try:
            children: list[Any] = self._fs.ls(self._engines, detail=False)
        except FileNotFoundError:
            return []
        return sorted(str(child).rstrip("/").rsplit("/", 1)[-1] for child in children)

    def _age_seconds(self, path: str, now: float) -> float:
        """Age by modification time; 0 (never collected) where the file system cannot tell."""
        with contextlib.suppress(OSError, NotImplementedError, KeyError):
            modified: datetime = self._fs.modified(path)
            return now - modified.timestamp()
        return 0.0


def _os_reason(exc: OSError) -> str:
    """The OS's reason without the path (the message names the cache root already)."""
    return exc.strerror or one_line(exc)


def lookup(cache_root: str, key: str) -> Manifest | None:
    """The operator's reader: the published manifest for ``key`` under ``cache_root``, or None."""
    return EngineCache(cache_root).lookup(key)
