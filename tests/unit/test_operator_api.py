"""LipSyncModel API types and the CRD generated from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from lipsync_contract.api import LipSyncModelSpec, LipSyncModelStatus
from lipsync_contract.api.crd import CRD_NAME, crd_manifest, crd_yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {
    "model": {"uri": "https://m.example/models/unet.onnx"},
    "avatar": {"uri": "pvc://avatars/anna"},
}


def _schema() -> dict[str, Any]:
    version = crd_manifest()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _walk(value, f"{path}/{index}")
    return found


def test_committed_crd_equals_generator_output() -> None:
    committed = (ROOT / "crds" / f"{CRD_NAME}.yaml").read_text()
    assert committed == crd_yaml(), "crds/ is stale: run `lipsync operator crd > crds/...yaml`"


def test_chart_crd_is_the_same_file() -> None:
    chart_crd = ROOT / "charts" / "lipsync-operator" / "crds" / f"{CRD_NAME}.yaml"
    assert chart_crd.read_text() == (ROOT / "crds" / f"{CRD_NAME}.yaml").read_text()


def test_schema_is_structural() -> None:
    for path, node in _walk(_schema()):
        assert "$ref" not in node, path
        assert not {"anyOf", "oneOf", "allOf"} & set(node), path
        assert node.get("additionalProperties") is not False, path
        assert "title" not in node, path
        if path.endswith(("/properties", "/x-kubernetes-validations")) or "/enum" in path:
            continue
        if "properties" in node or "items" in node:
            assert "type" in node, f"{path} has no type"


def test_schema_carries_defaults_enums_ranges() -> None:
    spec = _schema()["properties"]["spec"]
    props = spec["properties"]
    assert spec["required"] == ["model", "avatar"]
    assert props["precision"]["enum"] == ["fp32", "fp16", "int8"]
    assert props["precision"]["default"] == "fp16"
    assert props["sharing"]["enum"] == ["exclusive", "timeSlicing", "mps"]
    assert props["replicasPerGPU"] == {
        **props["replicasPerGPU"],
        "type": "integer",
        "default": 6,
        "minimum": 1,
        "maximum": 32,
    }
    assert props["batching"]["default"] == {}
    assert props["batching"]["properties"]["maxQueueDelayMicroseconds"]["default"] == 4000
    autoscaling = props["autoscaling"]["properties"]
    assert autoscaling["targetFps"]["exclusiveMinimum"] is True
    assert "default" not in autoscaling["targetFps"]  # unset: from the builder's measurement
    assert autoscaling["minReplicas"]["minimum"] == 0  # scale to zero
    per_product = autoscaling["productTargetFps"]
    assert per_product["type"] == "object"
    assert per_product["additionalProperties"] == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 100000,
    }
    assert props["gpus"]["properties"]["products"]["x-kubernetes-list-type"] == "set"
    assert all("description" in props[name] for name in props)


def test_cel_rules_cover_cross_field_constraints() -> None:
    spec = _schema()["properties"]["spec"]
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert "self.precision != 'int8' || has(self.calibration)" in rules
    autoscaling = spec["properties"]["autoscaling"]["x-kubernetes-validations"]
    # Guarded by has(): the API server also evaluates rules on the schema's default ({}).
    assert autoscaling[0]["rule"] == (
        "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas"
    )


def test_crd_names_subresources_and_columns() -> None:
    crd = crd_manifest()
    assert crd["metadata"]["name"] == "lipsyncmodels.lipsync.dev"
    assert crd["spec"]["names"]["shortNames"] == ["lsm"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["GPU Products"] == ".status.gpuProducts"
    assert columns["Ready"] == ".status.readyReplicas"
    assert columns["Age"] == ".metadata.creationTimestamp"
    status_props = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for column in version["additionalPrinterColumns"]:
        section, field = column["jsonPath"].split(".")[1:3]
        if section == "status":
            assert field in status_props


def test_crd_yaml_is_deterministic_and_parses() -> None:
    assert crd_yaml() == crd_yaml()
    assert yaml.safe_load(crd_yaml()) == crd_manifest()


def test_spec_defaults_match_the_schema_defaults() -> None:
    spec = LipSyncModelSpec.model_validate(MINIMAL)
    props = _schema()["properties"]["spec"]["properties"]
    dumped = spec.to_api()
    for name, prop in props.items():
        if "default" in prop and prop["default"] != {}:
            assert dumped[name] == prop["default"], name
    assert spec.replicas_per_gpu == 6
    assert spec.io.model_contract().image.shape == (6, 320, 320)


def test_spec_round_trips_camel_case() -> None:
    document = {
        **MINIMAL,
        "replicasPerGPU": 4,
        "batching": {"maxBatch": 4, "maxQueueDelayMicroseconds": 2000},
        "accuracy": {"minPsnrDb": 38.5},
    }
    spec = LipSyncModelSpec.model_validate(document)
    assert spec.batching.max_queue_delay_microseconds == 2000
    assert spec.accuracy.min_psnr_db == 38.5
    again = LipSyncModelSpec.model_validate(spec.to_api())
    assert again == spec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"precision": "int8"}, "int8 needs spec.calibration"),
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, r"minReplicas \(5\) must be <="),
        ({"autoscaling": {"productTargetFps": {"NVIDIA-L4": 0}}}, "productTargetFps"),
        ({"autoscaling": {"minReplicas": -1}}, "minReplicas"),
        ({"io": {"preset": "nope"}}, "unknown preset 'nope'"),
        ({"sharing": "sometimes"}, "sharing"),
        ({"replicasPerGPU": 0}, "replicasPerGPU"),
        ({"model": {"uri": "ftp://x"}}, "pattern"),
        ({"model": {"uri": "s3://models/unet.onnx"}}, "pattern"),  # no client in the images
        ({"model": {"uri": "https://user:secret@models.example/unet.onnx"}}, "pattern"),
        ({"model": {"uri": "https://models.example/unet.onnx?X-Amz-Signature=ab"}}, "pattern"),
        ({"calibration": {"uri": "https://models.example/cal/#token=ab"}}, "pattern"),
        ({"gpus": {"products": ["bad product"]}}, "pattern"),
        ({"unknownField": 1}, "unknownField"),
    ],
)
def test_invalid_specs_are_rejected_with_a_readable_reason(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        LipSyncModelSpec.model_validate({**MINIMAL, **change})


def test_int8_with_calibration_is_valid() -> None:
    spec = LipSyncModelSpec.model_validate(
        {**MINIMAL, "precision": "int8", "calibration": {"uri": "https://m.example/cal/set/"}}
    )
    assert spec.calibration is not None
    assert spec.calibration.samples == 512


def test_status_round_trips_and_ignores_unknown_fields() -> None:
    document = {
        "observedGeneration": 3,
        "phase": "Ready",
        "conditions": [
            {
                "type": "EnginesReady",
                "status": "True",
                "reason": "AllEnginesReady",
                "message": "",
                "lastTransitionTime": "2025-01-02T03:04:05Z",
            }
        ],
        "engines": [{"gpuProduct": "NVIDIA-H100-80GB-HBM3", "state": "Ready", "psnrDb": 41.2}],
        "replicas": 48,
        "readyReplicas": 48,
        "endpoint": "anna.default.svc:8001",
        "fromTheFuture": True,
    }
    status = LipSyncModelStatus.model_validate(document)
    assert status.engines[0].psnr_db == 41.2
    dumped = status.to_api()
    assert dumped["conditions"][0]["lastTransitionTime"] == "2025-01-02T03:04:05Z"
    assert "fromTheFuture" not in dumped
    assert LipSyncModelStatus.model_validate(dumped) == status
