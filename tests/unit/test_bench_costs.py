"""Cost table arithmetic, checked against the user's own worked examples where they are right."""

from __future__ import annotations

import math
from typing import Any

import pytest
from lipsync_bench import costs

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("fps", "expected"),
    [(150, 16.67), (168, 14.88), (210, 11.90), (270, 9.26)],
)
def test_cost_per_1000_fps_hours_matches_the_plans_examples(fps: float, expected: float) -> None:
    assert costs.cost_per_1000_fps_hours(2.50, fps) == pytest.approx(expected, abs=0.005)


def test_monthly_cost_of_the_baseline_is_devices_times_rate_times_hours() -> None:
    # The plan's "$900/month" for one GPU at $2.50/h is inconsistent: 730 h make $1,825.
    assert costs.monthly_cost(150, 150, 1, 2.50) == pytest.approx(1825.0)
    assert costs.monthly_cost(150, 150, 8, 2.50, hours_per_month=100) == pytest.approx(2000.0)


def test_savings_fraction_is_one_minus_inverse_speedup() -> None:
    baseline = costs.monthly_cost(150, 150, 1, 2.50)
    saved = costs.monthly_savings(168, 150, 1, 2.50)
    assert saved / baseline == pytest.approx(1 - 150 / 168)
    assert saved / baseline == pytest.approx(0.107, abs=0.001)
    assert costs.monthly_savings(150, 150, 8, 2.50) == 0
    assert costs.monthly_savings(100, 150, 1, 2.50) < 0


def test_fps_for_devices_and_speedup() -> None:
    assert costs.fps_for_devices(150, 8) == 1200
    assert costs.speedup(270, 150) == pytest.approx(1.8)
    with pytest.raises(ValueError, match="devices"):
        costs.fps_for_devices(150, 0)
    with pytest.raises(ValueError, match="baseline_fps"):
        costs.speedup(150, 0)


def test_break_even_hours_repays_the_effort_exactly() -> None:
    hours = costs.break_even_hours(
        effort_hours=4,
        usd_per_effort_hour=100,
        fps=210,
        baseline_fps=150,
        devices=8,
        usd_per_device_hour=2.50,
    )
    saved_per_hour = costs.monthly_savings(210, 150, 8, 2.50, hours_per_month=1)
    assert hours * saved_per_hour == pytest.approx(400)
    assert hours == pytest.approx(400 / (8 * 2.50 * (1 - 150 / 210)))


def _args(**overrides: float) -> dict[str, Any]:
    args: dict[str, Any] = {
        "effort_hours": 4,
        "usd_per_effort_hour": 100,
        "fps": 210,
        "baseline_fps": 150,
        "devices": 1,
        "usd_per_device_hour": 2.5,
    }
    return args | overrides


def test_break_even_edge_cases() -> None:
    assert costs.break_even_hours(**_args(effort_hours=0, fps=210)) == 0
    assert costs.break_even_hours(**_args(fps=150)) == math.inf
    assert costs.break_even_hours(**_args(fps=120)) == math.inf


def test_non_positive_fps_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="fps must be positive"):
        costs.cost_per_1000_fps_hours(2.5, 0)
