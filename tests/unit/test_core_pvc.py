"""pvc://<claim>/<path> URIs: parsed once, resolved by the builder under its claims' mount root."""

from __future__ import annotations

from pathlib import Path

import pytest

from lipsync_core.pvc import PvcRef, parse_pvc_uri
from lipsync_engine_builder.errors import BadInputError
from lipsync_engine_builder.sources import pvc_path

pytestmark = pytest.mark.unit


def test_claim_and_path_are_parsed_and_other_uris_are_not_pvc() -> None:
    assert parse_pvc_uri("pvc://models/unet328/unet.onnx") == PvcRef("models", "unet328/unet.onnx")
    assert parse_pvc_uri("pvc://avatars/anna/") == PvcRef("avatars", "anna")
    assert parse_pvc_uri("pvc://avatars") == PvcRef("avatars", "")
    assert parse_pvc_uri("pvc:///no-claim") is None
    assert parse_pvc_uri("s3://models/unet.onnx") is None


def test_builder_reads_a_pvc_uri_under_the_mount_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPSYNC_PVC_ROOT", "/srv/claims")
    assert pvc_path("pvc://models/u/unet.onnx") == Path("/srv/claims/models/u/unet.onnx")
    monkeypatch.delenv("LIPSYNC_PVC_ROOT")
    assert pvc_path("pvc://models/a.onnx") == Path("/mnt/pvc/models/a.onnx")
    with pytest.raises(BadInputError, match="names a claim"):
        pvc_path("pvc:///a.onnx")
