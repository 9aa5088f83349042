"""Fetching models and calibration data from a URI: a path, file://, or any fsspec URL.

A PVC is a mounted path: ``pvc://<claim>/<path>`` is read from ``$LIPSYNC_PVC_ROOT/<claim>/<path>``
(default ``/mnt/pvc``, where the operator mounts the claims of a build Job). The URI, not the
mount, goes into the engine key. Remote files are copied into the build's work directory.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from lipsync_contract.pvc import (
    DEFAULT_PVC_ROOT,
    PVC_MOUNTS_ENV,
    PVC_ROOT_ENV,
    is_pvc_uri,
    parse_pvc_mounts,
    parse_pvc_uri,
)
from lipsync_contract.request import SOURCE_CA_ENV, SOURCE_TOKEN_ENV
from lipsync_engine_builder.errors import BadInputError, one_line


def pvc_path(uri: str) -> Path:
    """The mounted path of ``pvc://<claim>/<path>``: the claim's own mount path when
    ``LIPSYNC_PVC_MOUNTS`` names it, else ``$LIPSYNC_PVC_ROOT/<claim>``."""
    ref = parse_pvc_uri(uri)
    if ref is None:
        raise BadInputError(f"{uri}: a pvc:// URI names a claim: pvc://<claim>/<path>")
    mounted = parse_pvc_mounts(os.environ.get(PVC_MOUNTS_ENV, "")).get(ref.claim)
    base = Path(mounted) if mounted else Path(os.environ.get(PVC_ROOT_ENV) or DEFAULT_PVC_ROOT)
    return (base if mounted else base / ref.claim) / ref.path


def _https_options(uri: str, what: str) -> dict[str, object]:
    """fsspec's HTTP options for an https:// source: the bearer token (never sent in the clear)
    and the extra CAs to trust, from the build's credentials."""
    options: dict[str, object] = {}
    token = os.environ.get(SOURCE_TOKEN_ENV)
    if token:
        options["headers"] = {"Authorization": f"Bearer {token}"}
    authorities = os.environ.get(SOURCE_CA_ENV)
    if authorities:
        context = ssl.create_default_context()
        try:
            context.load_verify_locations(cadata=authorities)
        except (ssl.SSLError, ValueError) as exc:
            raise BadInputError(
                f"{what} {uri}: the credentials' CA certificates are not PEM: {one_line(exc)}"
            ) from None
        options["ssl"] = context  # aiohttp's per-request TLS context
    return options


def fetch(uri: str, workdir: Path, what: str = "model") -> Path:
    """A local path to the file or directory at ``uri`` (copied into ``workdir`` if remote)."""
    if is_pvc_uri(uri):
        mounted = pvc_path(uri)
        if not mounted.exists():
            raise BadInputError(f"{what} {uri}: not found (looked in {mounted})")
        return mounted
    options = _https_options(uri, what) if uri.startswith("https://") else {}
    try:
        fs, path = fsspec.core.url_to_fs(uri, **options)
    except (ImportError, ValueError) as exc:
        raise BadInputError(f"{what} {uri}: unsupported URI: {one_line(exc)}") from None
    if isinstance(fs, LocalFileSystem):
        local = Path(path)
        if not local.exists():
            raise BadInputError(f"{what} {uri}: not found")
        return local
    name = path.rstrip("/").rsplit("/", 1)[-1] or what
    target = workdir / "sources" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fs.isdir(path):
            fs.get(path.rstrip("/") + "/", str(target), recursive=True)
        else:
            fs.get_file(path, str(target))
    except FileNotFoundError:
        raise BadInputError(f"{what} {uri}: not found") from None
    except Exception as exc:  # network and credential errors differ per file system
        raise BadInputError(f"{what} {uri}: cannot fetch: {one_line(exc)}") from None
    return target
