"""``lipsync build --audio-encoder``: the UNet and the audio encoder built, gated and cached as two
models with a key each, found again on a second run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipsync_contract.modelio import encoder_preset
from lipsync_contract.request import BuildRequest
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.samples import random_inputs

pytestmark = pytest.mark.component

LIPSYNC = str(Path(sys.executable).parent / "lipsync")
FAST = ["--batch-min", "1", "--batch-opt", "1", "--batch-max", "2", "--measure-frames", "2"]
ENCODER_FAST = ["--audio-encoder-batch-max", "4"]


def build(*args: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [LIPSYNC, "build", *FAST, *args], capture_output=True, text=True, timeout=900, check=False
    )
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pair-cache")


@pytest.fixture(scope="module")
def pair(reference_model: Path, reference_encoder: Path, cache: Path) -> dict[str, Any]:
    code, result, stderr = build(
        "--model", str(reference_model), "--audio-encoder", str(reference_encoder),
        "--cache", str(cache), *ENCODER_FAST,
    )  # fmt: skip
    assert code == 0, stderr
    return result


def test_both_models_are_published_under_the_keys_the_request_computes(
    pair: dict[str, Any], reference_model: Path, reference_encoder: Path, cache: Path
) -> None:
    request = BuildRequest.from_flat(
        {
            "model": str(reference_model),
            "audio_encoder": str(reference_encoder),
            "audio_encoder_batch_max": 4,
            "cache": str(cache),
            "batch_min": 1,
            "batch_opt": 1,
            "batch_max": 2,
        }
    )
    encoder_request = request.encoder_request()
    assert encoder_request is not None
    encoder = pair["audioEncoder"]
    assert (pair["state"], encoder["state"]) == ("Ready", "Ready")
    assert pair["key"] == request.key()
    assert encoder["key"] == encoder_request.key() != pair["key"]
    entries = sorted(path.name for path in (cache / "engines").iterdir())
    assert entries == sorted(key.removeprefix("sha256:") for key in (pair["key"], encoder["key"]))
    manifest = json.loads(
        (cache / "engines" / encoder["key"].removeprefix("sha256:") / "manifest.json").read_text()
    )
    assert manifest["key_inputs"]["contract"]["mel"]["shape"] == [1, 80, 16]
    assert [t["batch"] for t in manifest["throughput"]] == [1, 2, 4]
    assert manifest["accuracy"]["psnr_db"] >= 60.0


def test_the_published_encoder_runs_like_the_original(
    pair: dict[str, Any], reference_encoder: Path
) -> None:
    contract = encoder_preset("ave")
    artifact = Path(pair["audioEncoder"]["artifact"].removeprefix("file://"))
    config = BackendConfig(kind="onnxruntime-cpu", max_batch=4)
    built, original = (
        load_backend(path, contract, config) for path in (artifact, reference_encoder)
    )
    inputs = random_inputs(contract, 3, np.random.default_rng(0))
    np.testing.assert_allclose(built.infer(inputs), original.infer(inputs), atol=1e-4)


def test_a_second_run_finds_both_in_the_cache(
    pair: dict[str, Any], reference_model: Path, reference_encoder: Path, cache: Path
) -> None:
    code, result, stderr = build(
        "--model", str(reference_model), "--audio-encoder", str(reference_encoder),
        "--cache", str(cache), *ENCODER_FAST,
    )  # fmt: skip
    assert code == 0, stderr
    assert result["cacheHit"]
    assert result["audioEncoder"]["cacheHit"]
    assert result["audioEncoder"]["key"] == pair["audioEncoder"]["key"]


def test_a_model_that_is_not_an_encoder_fails_the_pair_with_a_named_reason(
    reference_model: Path, cache: Path
) -> None:
    code, result, stderr = build(
        "--model", str(reference_model), "--audio-encoder", str(reference_model),
        "--cache", str(cache), *ENCODER_FAST,
    )  # fmt: skip
    assert code == 2
    assert result["state"] == "Failed"
    assert result["audioEncoder"]["state"] == "Failed"
    assert result["reason"].startswith("audio encoder: ")
    assert "the contract expects mel float32[B,1,80,16]" in result["reason"]
    assert stderr.count("error: ") == 1


def test_an_unknown_encoder_preset_is_bad_input(reference_model: Path, cache: Path) -> None:
    code, result, _ = build(
        "--model", str(reference_model), "--audio-encoder", str(reference_model),
        "--audio-encoder-io", "unet328-ave", "--cache", str(cache),
    )  # fmt: skip
    assert code == 2
    assert "'unet328-ave' is not an audio encoder preset" in result["reason"]
