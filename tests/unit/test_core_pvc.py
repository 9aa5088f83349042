"""pvc://<claim>/<path> URIs: parsed once, resolved by the builder under its claims' mount root."""

from __future__ import annotations

from pathlib import Path

import pytest

from lipsync_contract.pvc import PvcRef, format_pvc_mounts, parse_pvc_mounts, parse_pvc_uri
from lipsync_engine_builder.errors import BadInputError
from lipsync_engine_builder.sources import pvc_path

pytestmark = pytest.mark.unit


def test_claim_and_path_are_parsed_and_other_uris_are_not_pvc() -> None:
    assert parse_pvc_uri("pvc://models/unet328/unet.onnx") == PvcRef("models", "unet328/unet.onnx")
    assert parse_pvc_uri("pvc://avatars/anna/") == PvcRef("avatars", "anna")
    assert parse_pvc_uri("pvc://avatars") == PvcRef("avatars", "")
    assert parse_pvc_uri("pvc:///no-claim") is None
    assert parse_pvc_uri("https://m.example/models/unet.onnx") is None


def test_builder_reads_a_pvc_uri_under_the_mount_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPSYNC_PVC_ROOT", "/srv/claims")
    assert pvc_path("pvc://models/u/unet.onnx") == Path("/srv/claims/models/u/unet.onnx")
    monkeypatch.delenv("LIPSYNC_PVC_ROOT")
    assert pvc_path("pvc://models/a.onnx") == Path("/mnt/pvc/models/a.onnx")
    with pytest.raises(BadInputError, match="names a claim"):
        pvc_path("pvc:///a.onnx")


def test_a_claims_own_mount_path_wins_over_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPSYNC_PVC_ROOT", "/mnt/pvc")
    monkeypatch.setenv("LIPSYNC_PVC_MOUNTS", format_pvc_mounts({"models": "/data/m"}))
    assert pvc_path("pvc://models/u/unet.onnx") == Path("/data/m/u/unet.onnx")
    assert pvc_path("pvc://avatars/anna") == Path("/mnt/pvc/avatars/anna")


def test_pvc_mounts_round_trip_and_ignore_malformed_entries() -> None:
    mounts = {"b": "/mnt/pvc/b", "a": "/x/a"}
    assert format_pvc_mounts(mounts) == "a=/x/a,b=/mnt/pvc/b"
    assert parse_pvc_mounts(format_pvc_mounts(mounts)) == mounts
    assert parse_pvc_mounts("a=/x,junk,=/y,c=") == {"a": "/x"}
