"""The Job result written to the termination-message path."""

from __future__ import annotations

import json

import pytest

from lipsync_engine_builder.result import TERMINATION_MESSAGE_LIMIT, BuildResult

pytestmark = pytest.mark.unit


def test_result_uses_the_documented_camel_case_fields() -> None:
    result = BuildResult(key="sha256:ab", state="Ready", psnr_db=31.5, cache_hit=True)
    document = json.loads(result.to_json())
    assert {"key", "state", "reason", "psnrDb", "maxAbsError", "framesPerSecond",
            "buildSeconds", "artifact", "cacheHit", "exitCode"} == set(document)  # fmt: skip
    assert document["psnrDb"] == 31.5
    assert document["cacheHit"] is True


def test_result_stays_under_the_termination_message_limit() -> None:
    result = BuildResult(
        key="sha256:" + "a" * 64, state="Failed", reason="x" * 10_000, artifact="s3://" + "b" * 5000
    )
    text = result.to_json()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert json.loads(text)["state"] == "Failed"
