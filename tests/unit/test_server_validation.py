"""Request checks: every malformed input is an InvalidRequestError that says what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync_contract.modelio import preset
from lipsync_server.errors import InvalidRequestError
from lipsync_server.validation import (
    check_frame_indices,
    decode_features,
    decode_tensor,
    decode_windows,
)

pytestmark = pytest.mark.unit

CONTRACT = preset("unet328-ave")


def test_features_decode_to_rows_of_the_feature_dim() -> None:
    data = np.ones((3, 512), "<f4").tobytes()
    assert decode_features(data, CONTRACT).shape == (3, 512)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no data"),
        (b"\x00" * 100, "not a whole number of 512-dim"),
        (np.full((1, 512), np.nan, "<f4").tobytes(), "NaN or Inf"),
        (np.full((1, 512), np.inf, "<f4").tobytes(), "NaN or Inf"),
    ],
)
def test_bad_features_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        decode_features(data, CONTRACT)


def test_windows_must_have_the_audio_tensor_shape() -> None:
    assert decode_windows(np.zeros((2, 32, 16, 16), "<f4").tobytes(), CONTRACT).shape == (
        2,
        32,
        16,
        16,
    )
    with pytest.raises(InvalidRequestError, match=r"windows of shape \[32, 16, 16\]"):
        decode_windows(np.zeros(100, "<f4").tobytes(), CONTRACT)


def test_frame_indices_are_bounded() -> None:
    check_frame_indices([0, 4], limit=8, available=5)
    with pytest.raises(InvalidRequestError, match="frame index 5 is out of range"):
        check_frame_indices([0, 5], limit=8, available=5)
    with pytest.raises(InvalidRequestError, match="at most 2 per request"):
        check_frame_indices([0, 1, 2], limit=2, available=None)
    with pytest.raises(InvalidRequestError, match="no frame_indices"):
        check_frame_indices([], limit=2, available=None)


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("FP16", [1, 32, 16, 16], b"", "datatype 'FP16', expected FP32"),
        ("FP32", [1, 32, 16], b"", "has shape"),
        ("FP32", [0, 32, 16, 16], b"", "has shape"),
        ("FP32", [9, 32, 16, 16], b"", "exceeds max_batch_size 8"),
        ("FP32", [1, 32, 16, 16], b"\x00" * 12, "12 bytes of raw data, expected 32768"),
    ],
)
def test_bad_oip_tensors_are_rejected(
    datatype: str, shape: list[int], raw: bytes, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        decode_tensor(CONTRACT.audio, datatype, shape, raw=raw, fp32_contents=[], max_batch=8)


def test_oip_tensor_from_typed_contents() -> None:
    values = [0.5] * (32 * 16 * 16)
    array = decode_tensor(
        CONTRACT.audio, "FP32", [1, 32, 16, 16], raw=None, fp32_contents=values, max_batch=8
    )
    assert array.shape == (1, 32, 16, 16)
    assert float(array.mean()) == 0.5
