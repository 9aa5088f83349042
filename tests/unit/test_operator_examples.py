"""examples/*.yaml validate against the generated CRD schema and the pydantic spec."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lipsync_contract.api import KIND, LipSyncModelSpec, api_version
from lipsync_contract.api.crd import openapi_v3_schema

pytestmark = pytest.mark.unit

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("lipsyncmodel*.yaml"))
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def schema_errors(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Check a value against the structural-schema subset the CRD uses (as the API server would:
    unknown fields are errors here, where the server would prune them)."""
    kind = schema.get("type")
    if kind is not None and (
        not isinstance(value, _TYPES[kind]) or (kind != "boolean" and isinstance(value, bool))
    ):
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{path}: longer than {schema['maxLength']}")
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if numeric and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        errors.append(f"{path}: {value} out of range")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        errors += [
            f"{path}.{name}: required" for name in schema.get("required", []) if name not in value
        ]
        for name, item in value.items():
            if name not in properties:
                if not schema.get("x-kubernetes-preserve-unknown-fields") and properties:
                    errors.append(f"{path}.{name}: unknown field")
                continue
            errors += schema_errors(item, properties[name], f"{path}.{name}")
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            errors.append(f"{path}: more than {schema['maxItems']} items")
        for index, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{path}[{index}]")
    return errors


def test_there_are_three_examples() -> None:
    assert [p.name for p in EXAMPLES] == [
        "lipsyncmodel-int8.yaml",
        "lipsyncmodel-multi-product.yaml",
        "lipsyncmodel.yaml",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert document["apiVersion"] == api_version()
    assert document["kind"] == KIND
    assert schema_errors(document, openapi_v3_schema()) == []
    spec = LipSyncModelSpec.model_validate(document["spec"])
    assert spec.to_api()["model"]["uri"] == document["spec"]["model"]["uri"]


def test_the_validator_catches_what_the_schema_forbids() -> None:
    schema = openapi_v3_schema()
    bad = {
        "apiVersion": api_version(),
        "kind": KIND,
        "metadata": {"name": "x"},
        "spec": {
            "model": {"uri": "ftp://nope"},
            "avatar": {"uri": "pvc://a/b"},
            "precision": "fp8",
            "replicasPerGPU": 99,
        },
    }
    errors = schema_errors(bad, schema)
    assert any("model.uri" in e for e in errors)
    assert any("precision" in e for e in errors)
    assert any("replicasPerGPU" in e for e in errors)
