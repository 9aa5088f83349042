"""PSNR, max abs error and the accuracy gate."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync_engine_builder.accuracy import (
    DEFAULT_MIN_PSNR_DB,
    PSNR_CAP_DB,
    check_gate,
    compare,
    min_psnr_for,
    psnr_db,
)
from lipsync_engine_builder.errors import AccuracyGateError

pytestmark = pytest.mark.unit


def test_psnr_of_a_known_error() -> None:
    reference = np.zeros((1, 3, 4, 4), dtype=np.float32)
    candidate = reference + 0.01  # mse 1e-4 over a range of 1 -> 40 dB
    assert psnr_db(reference, candidate) == pytest.approx(40.0)


def test_identical_outputs_report_the_cap() -> None:
    array = np.ones((2, 3), dtype=np.float32)
    assert psnr_db(array, array) == PSNR_CAP_DB


def test_compare_reports_max_abs_error_over_all_samples() -> None:
    references = [np.zeros(4, np.float32), np.zeros(4, np.float32)]
    candidates = [np.zeros(4, np.float32), np.array([0, 0.5, 0, 0], np.float32)]
    report = compare(references, candidates)
    assert report.max_abs_error == pytest.approx(0.5)
    assert report.samples == 2


def test_gate_refuses_below_threshold_and_carries_the_numbers() -> None:
    report = compare([np.zeros(4, np.float32)], [np.full(4, 0.1, np.float32)])  # 20 dB
    check_gate(report, 19.0, "int8")
    with pytest.raises(AccuracyGateError, match=r"20\.0 dB is below the gate of 25\.0") as info:
        check_gate(report, 25.0, "int8")
    assert info.value.psnr_db == pytest.approx(20.0)


def test_defaults_are_ordered_by_precision_and_overridable() -> None:
    assert DEFAULT_MIN_PSNR_DB["fp32"] > DEFAULT_MIN_PSNR_DB["fp16"] > DEFAULT_MIN_PSNR_DB["int8"]
    assert min_psnr_for("int8", None) == DEFAULT_MIN_PSNR_DB["int8"]
    assert min_psnr_for("int8", 12.5) == 12.5
