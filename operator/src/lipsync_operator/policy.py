"""What a LipSyncModel may ask for, by the cluster admin's settings (docs/operator.md, "Security
and multi-tenancy"): where its files may come from, which images run, how many GPUs it takes,
and whether its builder may write the shared engine cache.

Pure: a refused spec raises a ``PolicyError`` whose one-line message names the field, which the
reconciler records as the model's InvalidSpec condition before anything is created.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator
from urllib.parse import unquote, urlsplit

from lipsync_contract.api import LipSyncModelSpec
from lipsync_contract.errors import LipSyncError
from lipsync_operator.config import OperatorConfig

# A PersistentVolumeClaim name: a DNS-1123 subdomain.
_CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Where the builder writes engines of images the admin does not trust with the shared cache.
PRIVATE_CACHE_DIR = "private"


class PolicyError(LipSyncError):
    """The spec asks for something the operator's settings do not allow."""


def spec_uris(spec: LipSyncModelSpec) -> Iterator[tuple[str, str]]:
    """(field, URI) of every file the spec names."""
    yield "spec.model.uri", spec.model.uri
    yield "spec.avatar.uri", spec.avatar.uri
    if spec.audio_encoder is not None:
        yield "spec.audioEncoder.uri", spec.audio_encoder.uri
    if spec.calibration is not None:
        yield "spec.calibration.uri", spec.calibration.uri


def _segments(path: str) -> list[str]:
    return [segment for segment in unquote(path).split("/") if segment]


def under_prefix(path: str, prefix: str) -> bool:
    """``path`` is ``prefix`` or inside it, compared by whole path segments."""
    return _segments(path)[: len(_segments(prefix))] == _segments(prefix)


def check_uri(field: str, uri: str, allowed_host_paths: Iterable[str]) -> None:
    """Refuse a URI that could reach outside what it names.

    No ``.`` or ``..`` segment in any scheme (a ``pvc://`` path becomes a volume subPath, a
    ``file://`` path a hostPath); ``file://`` must be absolute (``file:///path``, no host part)
    and under one of the admin's allowed host path prefixes; ``pvc://`` must name a valid claim.
    """
    parts = urlsplit(uri)
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        raise PolicyError(f"{field} {uri!r}: '.' and '..' path segments are not allowed")
    if parts.scheme == "file":
        _check_host_path(field, uri, parts.netloc, parts.path, tuple(allowed_host_paths))
    elif parts.scheme == "pvc" and not _CLAIM_NAME.match(parts.netloc):
        raise PolicyError(
            f"{field} {uri!r}: pvc://<claim>/<path> needs a claim name (lower-case DNS name)"
        )


def _check_host_path(field: str, uri: str, host: str, path: str, allowed: tuple[str, ...]) -> None:
    if host or not path.startswith("/"):
        raise PolicyError(
            f"{field} {uri!r}: file:// URIs are absolute node paths (file:///path), "
            "without a host part"
        )
    if not allowed:
        raise PolicyError(
            f"{field} {uri!r}: file:// (node paths) is disabled by the operator "
            "(chart value sources.allowedHostPaths); use pvc://<claim>/<path>"
        )
    if posixpath.normpath(unquote(path)) == "/" or not any(under_prefix(path, p) for p in allowed):
        raise PolicyError(
            f"{field} {uri!r}: file:// paths must be under {', '.join(allowed)} "
            "(chart value sources.allowedHostPaths)"
        )


def check_images(spec: LipSyncModelSpec, config: OperatorConfig) -> None:
    """Image overrides only where the admin allows them."""
    if config.allow_image_overrides:
        return
    for field, image in (("server", spec.images.server), ("builder", spec.images.builder)):
        if image:
            raise PolicyError(
                f"spec.images.{field} {image!r}: image overrides are disabled by the operator "
                "(chart value images.allowOverrides); remove spec.images"
            )


def gpu_limit(spec: LipSyncModelSpec, config: OperatorConfig) -> int | None:
    """The most GPUs the model's servers take over all its products (None: no limit).

    ``spec.gpus.max`` asks for fewer than the operator's per-model limit; asking for more is
    refused, so a spec cannot lift the admin's cap.
    """
    ceiling = config.max_gpus_per_model or None
    wanted = spec.gpus.max
    if wanted is not None and ceiling is not None and wanted > ceiling:
        raise PolicyError(
            f"spec.gpus.max {wanted}: the operator allows at most {ceiling} GPUs per model "
            "(chart value limits.gpusPerModel)"
        )
    return wanted if wanted is not None else ceiling


def allot_gpus(gpus_by_product: dict[str, int], limit: int | None) -> dict[str, int]:
    """GPUs each product's servers may use under ``limit``, products taken in sorted order."""
    if limit is None:
        return dict(gpus_by_product)
    allotted: dict[str, int] = {}
    left = limit
    for product in sorted(gpus_by_product):
        allotted[product] = min(gpus_by_product[product], left)
        left -= allotted[product]
    return allotted


def image_identity(image: str) -> str:
    """The part of an image reference that names its content: ``repo@digest`` when a digest is
    given (a tag beside it says nothing more), else the reference as written."""
    name, at, digest = image.partition("@")
    if not at:
        return image
    last = name.rsplit("/", 1)
    if ":" in last[-1]:  # repo:tag@digest -> repo@digest (a registry's :port stays)
        last[-1] = last[-1].split(":", 1)[0]
    return f"{'/'.join(last)}@{digest}"


def builder_image(spec: LipSyncModelSpec, config: OperatorConfig) -> str:
    return spec.images.builder or config.default_builder_image


def runtime_identity(spec: LipSyncModelSpec, config: OperatorConfig, cache_dir: str = "") -> str:
    """The runtime in the engine key: the configured one, or the override image that builds.

    A build into a model's private ``cache_dir`` names it too: that engine is the model's own,
    so no other model's key (same file, same image) may ever refer to it.
    """
    runtime = image_identity(spec.images.builder) if spec.images.builder else config.runtime_id
    return f"{runtime} in {cache_dir}" if cache_dir else runtime


def trusted_builder(image: str, config: OperatorConfig) -> bool:
    """The operator's own builder image, or one the admin lists as trusted (exact reference or
    ``repo@sha256:...`` identity)."""
    if image == config.default_builder_image:
        return True
    trusted = set(config.trusted_builder_images)
    return image in trusted or image_identity(image) in trusted


def cache_subdir(spec: LipSyncModelSpec, config: OperatorConfig, namespace: str, name: str) -> str:
    """Where in the engine cache this model's builds write and its servers read.

    "" (the shared cache) for trusted builder images; a directory of the model's own for any
    other, so an image the admin does not trust never writes an engine another model loads.
    """
    if trusted_builder(builder_image(spec, config), config):
        return ""
    return f"{PRIVATE_CACHE_DIR}/{namespace}/{name}"


def check_spec(spec: LipSyncModelSpec, config: OperatorConfig) -> None:
    """Every policy check of one spec; raises the first violation."""
    for field, uri in spec_uris(spec):
        check_uri(field, uri, config.allowed_host_paths)
    check_images(spec, config)
    gpu_limit(spec, config)
