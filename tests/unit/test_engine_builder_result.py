"""The Job result written to the termination-message path."""

from __future__ import annotations

import json

import pytest

from lipsync_contract.result import TERMINATION_MESSAGE_LIMIT, BuildResult

pytestmark = pytest.mark.unit


def test_result_uses_the_documented_camel_case_fields() -> None:
    result = BuildResult(key="sha256:ab", state="Ready", psnr_db=31.5, cache_hit=True)
    document = json.loads(result.to_json())
    assert {"key", "state", "reason", "psnrDb", "maxAbsError", "framesPerSecond", "buildSeconds",
            "artifact", "artifactSha256", "cacheHit", "exitCode"} == set(document)  # fmt: skip
    assert document["psnrDb"] == 31.5
    assert document["cacheHit"] is True


def test_result_stays_under_the_termination_message_limit() -> None:
    result = BuildResult(
        key="sha256:" + "a" * 64,
        state="Failed",
        reason="x" * 10_000,
        artifact="https://m.example/" + "b" * 5000,
    )
    text = result.to_json()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert json.loads(text)["state"] == "Failed"


def test_the_pair_fails_with_the_worse_code_and_names_the_failed_model() -> None:
    from lipsync_engine_builder.pair import combine

    unet = BuildResult(key="sha256:a", state="Ready", reason="published")
    encoder_ok = BuildResult(key="sha256:b", state="Ready", reason="cache hit", cache_hit=True)
    both = combine(unet, encoder_ok)
    assert both.state == "Ready"
    assert both.audio_encoder == encoder_ok
    assert json.loads(both.to_json())["audioEncoder"]["key"] == "sha256:b"
    broken = BuildResult(key="sha256:b", state="Failed", reason="bad contract", exit_code=2)
    failed = combine(unet, broken)
    assert (failed.state, failed.exit_code) == ("Failed", 2)
    assert failed.reason == "audio encoder: bad contract"
    assert combine(unet, None) is unet
