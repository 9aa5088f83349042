"""Facts a backend reads without loading a model: the build manifest's precision, which kind of
PyTorch archive an artifact is, and which device a PyTorch backend runs on."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from lipsync_contract.errors import BackendError, ModelFileError
from lipsync_core.backends.artifact_facts import ArtifactFacts, artifact_facts, facts_from_manifest
from lipsync_core.backends.select import choose_kind
from lipsync_core.backends.torch_backend import resolve_device
from lipsync_core.backends.torch_files import kind_of_names, torch_artifact_kind

pytestmark = pytest.mark.unit


def test_manifest_facts() -> None:
    document = {
        "artifact": "engine-1.plan", "precision": "int8", "backend": "tensorrt",
        "runtime": "tensorrt 11.4.0", "key_inputs": {"compute_capability": "9.0"},
    }  # fmt: skip
    assert facts_from_manifest(document) == ArtifactFacts(
        "int8", "tensorrt", "tensorrt 11.4.0", "9.0"
    )
    assert facts_from_manifest({"precision": "bf16"}).precision is None


def test_the_manifest_beside_an_artifact_gives_its_precision(tmp_path: Path) -> None:
    artifact = tmp_path / "engine-1.plan"
    artifact.write_bytes(b"plan")
    assert artifact_facts(artifact) == ArtifactFacts()
    (tmp_path / "manifest.json").write_text(
        json.dumps({"artifact": "other.plan", "precision": "fp16"})
    )
    assert artifact_facts(artifact).precision is None  # a manifest for another file
    (tmp_path / "manifest.json").write_text(
        json.dumps({"artifact": artifact.name, "precision": "fp16"})
    )
    assert artifact_facts(artifact).precision == "fp16"


def test_pytorch_archive_kinds(tmp_path: Path) -> None:
    assert (
        kind_of_names(["m/data/aotinductor/model/x.wrapper.so", "m/archive_format"]) == "torch-aoti"
    )
    assert kind_of_names(["ep/models/model.json", "ep/data/weights/weight_0"]) == "torch"
    package = tmp_path / "engine.pt2"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("engine/data/aotinductor/model/a.so", b"")
    assert torch_artifact_kind(package) == "torch-aoti"
    assert choose_kind(package, ["onnxruntime-cpu"], tensorrt_loadable=False)[0] == "torch-aoti"
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match=r"broken\.pt2: not a PyTorch \.pt2 archive"):
        torch_artifact_kind(broken)


@pytest.mark.parametrize(
    ("requested", "cuda", "device"),
    [
        ("auto", True, "cuda:1"),
        ("auto", False, "cpu"),
        ("cpu", True, "cpu"),
        ("cuda", True, "cuda:1"),
    ],
)
def test_pytorch_device(requested: str, cuda: bool, device: str) -> None:
    assert resolve_device(requested, 1, cuda) == device


def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(BackendError, match="device cuda requested, but this torch has no CUDA"):
        resolve_device("cuda", 0, cuda_available=False)
