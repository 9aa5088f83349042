"""The build request and the engine key it produces: every key field counts, nothing else does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lipsync_contract.enginekey import EngineKeyInputs, engine_key
from lipsync_contract.request import BuildRequest
from lipsync_engine_builder.cli import build, request_from_params

pytestmark = pytest.mark.unit

BASE: dict[str, Any] = {
    "model": "https://m.example/models/unet_328.onnx",
    "precision": "int8",
    "calibration": "https://m.example/calibration/anna/",
    "runtime": "onnxruntime 1.32.0",
    "cache": "/var/cache/lipsync",
}

# Each change touches exactly one key field (calibration ones only matter for int8).
KEY_CHANGES: dict[str, dict[str, Any]] = {
    "model": {"model": "https://m.example/models/other.onnx"},
    "sha256": {"sha256": "a" * 64},
    "io": {"io": "unet328-export"},
    "precision": {"precision": "fp16"},
    "backend": {"backend": "tensorrt"},
    "runtime": {"runtime": "onnxruntime 1.33.0"},
    "gpu_product": {"gpu_product": "NVIDIA-H100-80GB-HBM3"},
    "compute_capability": {"compute_capability": "9.0"},
    "batch_min": {"batch": {"min": 2, "opt": 4, "max": 8}},
    "batch_opt": {"batch": {"min": 1, "opt": 2, "max": 8}},
    "batch_max": {"batch": {"min": 1, "opt": 4, "max": 16}},
    "calibration": {"calibration": "https://m.example/calibration/bob/"},
    "calibration_sha256": {"calibration_sha256": "b" * 64},
    "calibration_samples": {"calibration_samples": 512},
}
NON_KEY_CHANGES: dict[str, dict[str, Any]] = {
    "cache": {"cache": "s3://other-cache"},
    "termination_log": {"termination_log": "/tmp/result.json"},
    "min_psnr": {"min_psnr": 20.0},
    "verify_samples": {"verify_samples": 9},
    "measure_frames": {"measure_frames": 3},
    "allow_random_calibration": {"allow_random_calibration": True},
    # The UNet's key does not depend on the encoder built beside it (the encoder has its own).
    "audio_encoder": {"audio_encoder": "https://m.example/models/ave.onnx"},
    "audio_encoder_sha256": {"audio_encoder_sha256": "e" * 64},
    "audio_encoder_batch_max": {"audio_encoder_batch_max": 64},
}


def request(**changes: Any) -> BuildRequest:
    return BuildRequest.model_validate({**BASE, **changes})


@pytest.mark.parametrize("field", sorted(KEY_CHANGES))
def test_each_key_field_changes_the_key(field: str) -> None:
    assert request(**KEY_CHANGES[field]).key() != request().key()


@pytest.mark.parametrize("field", sorted(NON_KEY_CHANGES))
def test_fields_outside_the_key_leave_it_alone(field: str) -> None:
    assert request(**NON_KEY_CHANGES[field]).key() == request().key()


def test_calibration_is_not_in_the_key_without_int8() -> None:
    fp16 = request(precision="fp16")
    assert fp16.key_inputs().calibration_digest == ""
    assert fp16.key() == request(precision="fp16", calibration="https://m.example/elsewhere/").key()


def test_pinned_digest_replaces_the_uri_in_the_key() -> None:
    pinned = request(sha256="c" * 64)
    assert pinned.key_inputs().model_digest == "c" * 64
    assert pinned.key() == request(sha256="c" * 64, model="https://mirror/unet.onnx").key()


def test_key_ignores_field_order_and_formatting() -> None:
    inputs = request().key_inputs()
    document = json.loads(inputs.canonical_json())
    document.pop("schema")
    shuffled = dict(reversed(list(document.items())))
    reformatted = json.loads(json.dumps(shuffled, indent=4))
    assert engine_key(EngineKeyInputs.model_validate(reformatted)) == engine_key(inputs)


def test_job_args_parse_back_to_the_same_request() -> None:
    original = request(
        sha256="d" * 64, gpu_product="NVIDIA-L4", compute_capability="8.9", min_psnr=28.5,
        allow_random_calibration=True, batch={"min": 1, "opt": 2, "max": 4},
    )  # fmt: skip
    args = original.to_args()
    assert args[0] == "build"
    context = build.make_context("build", args[1:])
    parsed = request_from_params(context.params)
    assert parsed == original
    assert parsed.key() == original.key()


def test_job_args_pin_the_runtime_even_when_left_to_default() -> None:
    unpinned = request(runtime="")
    args = unpinned.to_args()
    runtime = args[args.index("--runtime") + 1]
    assert runtime.startswith("onnxruntime ")
    assert runtime == unpinned.key_inputs().runtime


def test_batch_profile_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="min <= opt <= max"):
        request(batch={"min": 4, "opt": 2, "max": 8})


def test_the_audio_encoder_is_a_second_request_with_its_own_key() -> None:
    assert request().encoder_request() is None
    pair = request(audio_encoder="https://m.example/models/ave.onnx", audio_encoder_batch_max=16)
    encoder = pair.encoder_request()
    assert encoder is not None
    assert (encoder.model, encoder.io, encoder.precision) == (
        "https://m.example/models/ave.onnx",
        "ave",
        "fp32",
    )
    assert (encoder.batch.min, encoder.batch.opt, encoder.batch.max) == (1, 8, 16)
    assert encoder.calibration_digest() == ""
    assert encoder.key() != pair.key()
    assert encoder.key_inputs().contract.inputs[0].name == "mel"
    other = request(audio_encoder="https://m.example/models/ave-2.onnx", audio_encoder_batch_max=16)
    assert other.encoder_request() is not None
    assert other.encoder_request().key() != encoder.key()  # type: ignore[union-attr]
    fp16 = request(
        precision="fp16", audio_encoder="https://m.example/models/ave.onnx"
    ).encoder_request()
    assert fp16 is not None
    assert fp16.precision == "fp16"
    with pytest.raises(ValueError, match="'unet328-ave' is not an audio encoder preset"):
        request(audio_encoder="s3://x.onnx", audio_encoder_io="unet328-ave").encoder_request()


def test_job_args_with_an_audio_encoder_parse_back_to_the_same_request() -> None:
    original = request(
        audio_encoder="pvc://models/ave.onnx", audio_encoder_sha256="f" * 64,
        audio_encoder_batch_max=24,
    )  # fmt: skip
    args = original.to_args()
    assert args[args.index("--audio-encoder") + 1] == "pvc://models/ave.onnx"
    parsed = request_from_params(build.make_context("build", args[1:]).params)
    assert parsed == original
    assert parsed.encoder_request() == original.encoder_request()
