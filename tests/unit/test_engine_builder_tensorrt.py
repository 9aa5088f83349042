"""The pure parts of the TensorRT and TensorRT-RTX targets: profiles, flags, cache names."""

from __future__ import annotations

import importlib

import pytest

from lipsync_core.contract import preset
from lipsync_core.enginekey import BatchProfile
from lipsync_engine_builder.targets.profiles import (
    profile_shapes,
    shapes_option,
    tensorrt_flag_names,
    timing_cache_name,
)
from lipsync_engine_builder.targets.tensorrt import unavailable_reason

pytestmark = pytest.mark.unit


def test_profile_covers_every_input_over_the_batch_range() -> None:
    shapes = profile_shapes(preset("unet328-ave"), BatchProfile(min=1, opt=4, max=16))
    assert shapes == {
        "input": ((1, 6, 320, 320), (4, 6, 320, 320), (16, 6, 320, 320)),
        "audio": ((1, 32, 16, 16), (4, 32, 16, 16), (16, 32, 16, 16)),
    }


def test_shapes_option_uses_the_execution_provider_syntax() -> None:
    assert shapes_option(preset("unet328-export"), 2) == "image:2x6x320x320,audio:2x512x1x8"


@pytest.mark.parametrize(
    ("precision", "flags"), [("fp32", []), ("fp16", ["FP16"]), ("int8", ["INT8", "FP16"])]
)
def test_precision_flags(precision: str, flags: list[str]) -> None:
    assert tensorrt_flag_names(precision) == flags  # type: ignore[arg-type]


def test_timing_cache_is_per_gpu_product_and_version_and_a_safe_file_name() -> None:
    h100 = timing_cache_name("NVIDIA H100 80GB HBM3", "tensorrt 10.13.0")
    assert h100 == "NVIDIA_H100_80GB_HBM3__tensorrt_10.13.0.timing-cache"
    assert h100 != timing_cache_name("NVIDIA-L4", "tensorrt 10.13.0")
    assert "/" not in timing_cache_name("a/b", "c")


def test_tensorrt_absence_has_a_reason() -> None:
    reason = unavailable_reason()
    try:
        tensorrt = importlib.import_module("tensorrt")
    except ImportError:
        assert "not installed" in reason
        return
    assert (reason == "") == hasattr(tensorrt, "Builder")
