"""TensorRT backend on a real GPU: build a plan from the reference model, compare with ORT CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipsync_contract.errors import BackendError
from lipsync_contract.modelio import preset
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.backends import tensorrt as tensorrt_backend
from lipsync_core.backends.cuda_runtime import device_count
from lipsync_core.samples import random_inputs

pytestmark = pytest.mark.gpu

if not tensorrt_backend.is_available():
    pytest.skip(
        "TensorRT is not installed here; install tensorrt (NVIDIA's index) on a GPU machine "
        "to run this test",
        allow_module_level=True,
    )
trt: Any = pytest.importorskip("tensorrt", reason="TensorRT does not import here")

CONTRACT = preset("unet328-ave")
# Two profiles, so that both the profile switch and the choice by batch size are exercised.
PROFILES = ((1, 1, 2), (2, 4, 8))


@pytest.fixture(scope="module")
def cuda_device() -> None:
    try:
        count = device_count()
    except BackendError as exc:
        pytest.skip(f"no usable CUDA device: {exc}")
    if count < 1:
        pytest.skip("no CUDA device")


def _build_plan(onnx_path: Path, plan_path: Path) -> Path:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise AssertionError(f"TensorRT cannot parse the reference model: {errors}")
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)  # compare true FP32 with ORT CPU
    for low, opt, high in PROFILES:
        profile = builder.create_optimization_profile()
        for spec in CONTRACT.inputs:
            profile.set_shape(
                spec.name, spec.batch_shape(low), spec.batch_shape(opt), spec.batch_shape(high)
            )
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "TensorRT could not build the engine"
    plan_path.write_bytes(bytes(plan))
    return plan_path


@pytest.fixture(scope="module")
def plan(
    cuda_device: None, reference_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return _build_plan(reference_model, tmp_path_factory.mktemp("plans") / "unet328.plan")


def test_tensorrt_matches_ort_cpu_across_profiles(plan: Path, reference_model: Path) -> None:
    reference = load_backend(
        reference_model, CONTRACT, BackendConfig(kind="onnxruntime-cpu", max_batch=8)
    )
    backend = load_backend(plan, CONTRACT, BackendConfig(max_batch=8))
    info = backend.describe()
    assert (info.kind, info.provider, info.batch_sizes) == ("tensorrt", "TensorRT", (1, 8))
    rng = np.random.default_rng(7)
    for batch in (1, 3, 8, 2, 1):  # profile 0, 1, 1, 0 or 1, 0: switches both ways
        inputs = random_inputs(CONTRACT, batch, rng)
        got = backend.infer(inputs)
        want = reference.infer(inputs)
        assert got.shape == (batch, 3, 320, 320)
        np.testing.assert_allclose(got, want, atol=2e-3, err_msg=f"batch {batch}")
    backend.close()
    reference.close()


def test_tensorrt_refuses_a_batch_above_its_buffers(plan: Path) -> None:
    backend = load_backend(plan, CONTRACT, BackendConfig(kind="tensorrt", max_batch=4))
    with pytest.raises(BackendError, match="outside the engine's range"):
        backend.infer(random_inputs(CONTRACT, 5, np.random.default_rng(0)))
    backend.close()


def test_tensorrt_refuses_a_max_batch_beyond_its_profiles(plan: Path) -> None:
    with pytest.raises(BackendError, match="accepts batches up to 8"):
        load_backend(plan, CONTRACT, BackendConfig(kind="tensorrt", max_batch=16))


def test_tensorrt_refuses_a_file_that_is_not_a_plan(cuda_device: None, tmp_path: Path) -> None:
    path = tmp_path / "broken.plan"
    path.write_bytes(b"\x00" * 1024)
    with pytest.raises(BackendError, match=r"broken\.plan: TensorRT .* cannot deserialize"):
        load_backend(path, CONTRACT, BackendConfig(kind="tensorrt"))
