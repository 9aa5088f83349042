"""Audio windows: edges repeated, reshaped to the contract, the same streamed as at once."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync_contract.errors import ContractError
from lipsync_contract.modelio import preset
from lipsync_server.audio import (
    StreamWindower,
    build_windows,
    check_window_shape,
    synthetic_features,
    window_rows,
)

pytestmark = pytest.mark.unit

CONTRACT = preset("unet328-ave")


def test_window_is_8_before_current_7_after_with_edges_repeated() -> None:
    assert window_rows(0, 30, CONTRACT).tolist() == [0] * 9 + list(range(1, 8))
    assert window_rows(10, 30, CONTRACT).tolist() == list(range(2, 18))
    assert window_rows(29, 30, CONTRACT).tolist() == list(range(21, 30)) + [29] * 7


def test_windows_have_the_contract_audio_shape_and_hold_the_right_vectors() -> None:
    features = np.arange(20 * 512, dtype=np.float32).reshape(20, 512)
    windows = build_windows(features, [0, 10], CONTRACT)
    assert windows.shape == (2, 32, 16, 16)
    assert windows.dtype == np.float32
    np.testing.assert_array_equal(windows[1].reshape(16, 512), features[2:18])


def test_a_window_that_cannot_fill_the_audio_tensor_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match="cannot fill audio tensor"):
        check_window_shape(preset("unet328-export"))
    check_window_shape(CONTRACT)


@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
def test_streamed_windows_equal_windows_of_the_whole_clip(chunk: int) -> None:
    features = synthetic_features(23, 512, seed=1)
    expected = build_windows(features, list(range(23)), CONTRACT)
    windower = StreamWindower(CONTRACT)
    got: list[tuple[int, np.ndarray, bool]] = []
    for start in range(0, 23, chunk):
        got.extend(windower.push(features[start : start + chunk]))
    got.extend(windower.finish())
    assert [index for index, _, _ in got] == list(range(23))
    np.testing.assert_array_equal(np.stack([window for _, window, _ in got]), expected)


def test_stream_emits_a_frame_only_once_its_look_ahead_arrived() -> None:
    windower = StreamWindower(CONTRACT)
    assert list(windower.push(synthetic_features(7, 512))) == []
    assert [index for index, _, _ in windower.push(synthetic_features(2, 512))] == [0, 1]


def test_a_frame_is_silent_only_when_its_whole_window_is() -> None:
    features = synthetic_features(40, 512)
    silent = np.zeros(40, bool)
    silent[10:30] = True
    windower = StreamWindower(CONTRACT)
    frames = [*windower.push(features, silent), *windower.finish()]
    assert [index for index, _, quiet in frames if quiet] == list(range(18, 23))
