"""The TensorRT backend's decisions that need no GPU: profiles, buffer sizes, dtypes, I/O checks."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
from cuda.bindings import runtime as cudart

from lipsync_contract.errors import BackendError, ContractError
from lipsync_contract.modelio import preset
from lipsync_core.backends import BackendConfig, cuda_runtime, load_backend, tensorrt
from lipsync_core.backends.tensorrt_api import load_tensorrt
from lipsync_core.backends.tensorrt_plan import (
    BatchRange,
    EngineTensor,
    ProfileShapes,
    array_at,
    batch_capacity,
    check_engine_io,
    choose_profile,
    numpy_dtype,
    profile_batch_range,
    tensor_nbytes,
)

pytestmark = pytest.mark.unit

CONTRACT = preset("unet328-ave")


def _profile(low: int, opt: int, high: int) -> dict[str, ProfileShapes]:
    return {
        spec.name: ProfileShapes(
            min=(low, *spec.shape), opt=(opt, *spec.shape), max=(high, *spec.shape)
        )
        for spec in CONTRACT.inputs
    }


def _engine_tensors(image_shape: tuple[int, ...] = (-1, 6, 320, 320)) -> list[EngineTensor]:
    return [
        EngineTensor("input", True, "FLOAT", image_shape),
        EngineTensor("audio", True, "FLOAT", (-1, 32, 16, 16)),
        EngineTensor("output", False, "HALF", (-1, 3, 320, 320)),
    ]


@pytest.mark.parametrize(
    ("batch", "expected"),
    [(1, 0), (2, 0), (3, 1), (4, 1), (5, 1), (7, 2), (8, 2)],
)
def test_choose_profile_prefers_the_closest_optimum(batch: int, expected: int) -> None:
    ranges = [BatchRange(1, 1, 2), BatchRange(1, 4, 8), BatchRange(4, 8, 8)]
    assert choose_profile(ranges, batch) == expected


def test_choose_profile_breaks_ties_by_the_narrower_range() -> None:
    ranges = [BatchRange(1, 4, 16), BatchRange(2, 4, 8)]
    assert choose_profile(ranges, 4) == 1


def test_choose_profile_names_the_batch_and_the_ranges_when_none_fits() -> None:
    with pytest.raises(BackendError, match=r"batch 9 \(profiles: \[1, 4\], \[4, 8\]\)"):
        choose_profile([BatchRange(1, 2, 4), BatchRange(4, 8, 8)], 9)


def test_profile_batch_range_intersects_the_inputs() -> None:
    shapes = _profile(1, 4, 8)
    audio = CONTRACT.audio
    shapes[audio.name] = ProfileShapes((2, *audio.shape), (2, *audio.shape), (6, *audio.shape))
    assert profile_batch_range(0, shapes, CONTRACT) == BatchRange(min=2, opt=4, max=6)


def test_profile_batch_range_rejects_a_profile_without_the_contract_shape() -> None:
    shapes = _profile(1, 4, 8)
    shapes["input"] = ProfileShapes((1, 6, 256, 256), (4, 6, 256, 256), (8, 6, 256, 256))
    with pytest.raises(ContractError, match=r"profile 0: tensor 'input' allows dimension 2"):
        profile_batch_range(0, shapes, CONTRACT)


def test_profile_batch_range_rejects_disjoint_batch_ranges() -> None:
    shapes = _profile(1, 1, 2)
    audio = CONTRACT.audio
    shapes[audio.name] = ProfileShapes((4, *audio.shape), (4, *audio.shape), (8, *audio.shape))
    with pytest.raises(ContractError, match="do not overlap"):
        profile_batch_range(3, shapes, CONTRACT)


def test_batch_capacity_is_the_configured_maximum_when_a_profile_reaches_it() -> None:
    assert batch_capacity([BatchRange(1, 1, 2), BatchRange(1, 4, 8)], 6) == 6


def test_batch_capacity_refuses_a_maximum_no_profile_accepts() -> None:
    with pytest.raises(BackendError, match="accepts batches up to 4, the configuration asks for 8"):
        batch_capacity([BatchRange(1, 2, 4)], 8)


def test_buffer_sizes_follow_shape_and_dtype() -> None:
    image = CONTRACT.image.batch_shape(8)
    assert tensor_nbytes(image, numpy_dtype("FLOAT")) == 8 * 6 * 320 * 320 * 4
    assert tensor_nbytes(image, numpy_dtype("HALF")) == 8 * 6 * 320 * 320 * 2
    with pytest.raises(BackendError, match="dynamic dimensions"):
        tensor_nbytes((-1, 3), numpy_dtype("FLOAT"))


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("FLOAT", np.float32),
        ("HALF", np.float16),
        ("INT8", np.int8),
        ("INT32", np.int32),
        ("INT64", np.int64),
        ("BOOL", np.bool_),
        ("UINT8", np.uint8),
    ],
)
def test_numpy_dtype_maps_tensorrt_types(name: str, dtype: type[np.generic]) -> None:
    assert numpy_dtype(name) == np.dtype(dtype)


def test_numpy_dtype_refuses_types_without_a_numpy_twin() -> None:
    with pytest.raises(BackendError, match="FP8 has no numpy equivalent"):
        numpy_dtype("FP8")


def test_array_at_views_foreign_memory_without_copying() -> None:
    memory = ctypes.create_string_buffer(2 * 3 * 4)
    view = array_at(ctypes.addressof(memory), (2, 3), np.dtype(np.float32))
    view[1, 2] = 1.5
    assert np.frombuffer(memory.raw, dtype=np.float32)[5] == 1.5


def test_check_engine_io_accepts_a_matching_engine() -> None:
    check_engine_io(CONTRACT, _engine_tensors())


def test_check_engine_io_names_a_missing_tensor() -> None:
    tensors = [t for t in _engine_tensors() if t.name != "audio"]
    with pytest.raises(ContractError, match="engine has no input tensor 'audio'"):
        check_engine_io(CONTRACT, tensors)


def test_check_engine_io_names_a_wrong_shape() -> None:
    with pytest.raises(ContractError, match=r"'input' has shape \[\?,6,256,256\]"):
        check_engine_io(CONTRACT, _engine_tensors(image_shape=(-1, 6, 256, 256)))


def test_check_engine_io_names_an_unknown_input() -> None:
    tensors = [*_engine_tensors(), EngineTensor("mask", True, "FLOAT", (-1, 1, 320, 320))]
    with pytest.raises(ContractError, match="'mask' the contract does not know"):
        check_engine_io(CONTRACT, tensors)


def test_cuda_errors_name_the_call_and_the_error() -> None:
    with pytest.raises(BackendError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        cuda_runtime.checked("cudaMalloc", (cudart.cudaError_t.cudaErrorMemoryAllocation, None))
    assert cuda_runtime.checked("cudaMalloc", (cudart.cudaError_t.cudaSuccess, 4096)) == 4096


def test_a_missing_tensorrt_is_a_one_line_backend_error(tmp_path: Path) -> None:
    if tensorrt.is_available():
        pytest.skip("TensorRT is installed here")
    with pytest.raises(BackendError, match=r"TensorRT is not (usable|installed) here"):
        load_tensorrt()
    plan = tmp_path / "unet.plan"
    plan.write_bytes(b"not loaded")
    with pytest.raises(BackendError, match=r"unet.plan: a TensorRT engine, but TensorRT is not"):
        load_backend(plan, CONTRACT, BackendConfig())
