"""The cache's publish protocol on an fsspec file system (in-memory): the conditional put path."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import fsspec
import pytest

from lipsync_contract.cache import result_from_manifest
from lipsync_contract.enginekey import BatchProfile, EngineKeyInputs, engine_key
from lipsync_contract.manifest import Accuracy, Manifest, Throughput
from lipsync_contract.modelio import preset
from lipsync_engine_builder.cache import EngineCache, lookup

pytestmark = pytest.mark.unit


def make_manifest(artifact_name: str) -> Manifest:
    inputs = EngineKeyInputs(
        model_digest="unpinned:/m.onnx", precision="fp32", contract=preset("unet328-ave"),
        batch=BatchProfile(), backend="onnxruntime-cpu", runtime="onnxruntime 1",
        builder_version="1",
    )  # fmt: skip
    return Manifest(
        key=engine_key(inputs), key_inputs=inputs, artifact=artifact_name, artifact_sha256="0" * 64,
        artifact_bytes=3, precision="fp32", backend=inputs.backend, runtime=inputs.runtime,
        model_uri="/m.onnx", model_sha256="1" * 64,
        accuracy=Accuracy(psnr_db=50.0, max_abs_error=0.01, min_psnr_db=40.0, samples=2),
        throughput=[Throughput(batch=1, ms_per_frame=10.0, frames_per_second=100.0)],
        build_seconds=1.0, created="2026-01-01T00:00:00+00:00",
    )  # fmt: skip


@pytest.fixture
def memory_root() -> str:
    return f"memory://cache-{uuid.uuid4().hex}"


def test_conditional_put_lets_one_builder_publish(memory_root: str, tmp_path: Path) -> None:
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    first.write_bytes(b"one")
    second.write_bytes(b"two")
    cache = EngineCache(memory_root)
    won = cache.publish(first, make_manifest("engine-a.onnx"))
    lost = cache.publish(second, make_manifest("engine-b.onnx"))
    assert won.published
    assert not lost.published
    assert lost.manifest.artifact == "engine-a.onnx"
    published = lookup(memory_root, won.manifest.key)
    assert published is not None
    assert published.artifact == "engine-a.onnx"


def test_a_result_names_the_artifact_by_its_uri_in_the_cache(
    memory_root: str, tmp_path: Path
) -> None:
    """The one result_from_manifest: ``artifact`` is where the artifact is, under the root."""
    source = tmp_path / "a.onnx"
    source.write_bytes(b"engine bytes")
    cache = EngineCache(memory_root + "/")
    manifest = cache.publish(source, make_manifest("engine-a.onnx")).manifest
    result = result_from_manifest(
        manifest, cache.root, cache_hit=True, seconds=0.123, reason="cache hit"
    )
    assert result.artifact == f"{memory_root}/engines/{manifest.key[7:]}/engine-a.onnx"
    assert result.artifact == cache.entry_uri(manifest.key, manifest.artifact)
    assert fsspec.open(result.artifact, "rb").open().read() == b"engine bytes"
    assert (result.state, result.key, result.cache_hit) == ("Ready", manifest.key, True)
    assert (result.psnr_db, result.frames_per_second, result.build_seconds) == (50.0, 100.0, 0.12)


def test_missing_key_is_none_and_listing_skips_incomplete_entries(memory_root: str) -> None:
    cache = EngineCache(memory_root)
    key = make_manifest("x.onnx").key
    assert cache.lookup(key) is None
    cache.ensure_writable()
    assert cache.entries() == []


def test_resolve_by_prefix(memory_root: str, tmp_path: Path) -> None:
    artifact = tmp_path / "a.onnx"
    artifact.write_bytes(b"one")
    cache = EngineCache(memory_root)
    manifest = make_manifest("engine-a.onnx")
    cache.publish(artifact, manifest)
    resolved = cache.resolve(manifest.key.removeprefix("sha256:")[:10])
    assert resolved is not None
    assert resolved.key == manifest.key
    assert cache.gc(grace=timedelta(0)) == []
