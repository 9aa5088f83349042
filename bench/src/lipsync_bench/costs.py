"""Cost and return-on-effort arithmetic for the summary table, as pure functions.

Definitions (the report's footnotes repeat them):

- **FPS per device**: frames per second one device (a GPU, or this whole machine on CPU) serves,
  measured at the best concurrency tried.
- **Cost per 1,000 FPS-hours**: what it costs to serve 1,000 frames/s for one hour,
  ``usd_per_device_hour / fps * 1000``. At $2.50/GPU-hour and 150 FPS that is $16.67.
- **Monthly cost (same load)**: the cost of serving the load that ``devices`` baseline devices
  serve, running ``hours_per_month`` hours (730 = 24 x 365 / 12):
  ``devices * usd_per_device_hour * hours_per_month * baseline_fps / fps``. A faster backend serves
  that load on fewer (fractional) devices; for the baseline it is simply devices x $/h x hours.
- **Monthly savings**: baseline monthly cost minus this backend's, i.e. the baseline cost times
  ``1 - 1 / speedup`` (a 1.12x speedup saves 10.7 %, not 12 %).
- **FPS for K devices**: ``K * fps`` of one device. Extrapolated, not measured: it assumes nothing
  shared between devices (network, CPU decode, storage) becomes the bottleneck.
- **Speedup**: ``fps / baseline_fps``.
- **Break-even hours**: wall-clock hours of operation on ``devices`` devices after which the
  savings have paid back a one-off effort of ``effort_hours * usd_per_effort_hour``.

The user's original plan mixes these up (e.g. "$900/month" for one GPU at $2.50/h, which is
$1,825 at 730 h/month; savings of "12 %" for a 1.12x speedup): these definitions replace it.
"""

from __future__ import annotations

import math

HOURS_PER_MONTH = 730.0
DEFAULT_USD_PER_DEVICE_HOUR = 2.50
DEFAULT_DEVICES = 8


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


def cost_per_1000_fps_hours(usd_per_device_hour: float, fps: float) -> float:
    """Dollars to serve 1,000 frames/s for one hour on devices that each serve ``fps``."""
    _positive("fps", fps)
    return usd_per_device_hour / fps * 1000.0


def fps_for_devices(fps_per_device: float, devices: int) -> float:
    """Frames/s of ``devices`` devices, extrapolated linearly from one."""
    if devices < 1:
        raise ValueError(f"devices must be at least 1, got {devices}")
    return fps_per_device * devices


def speedup(fps: float, baseline_fps: float) -> float:
    """How many times the baseline's frames/s."""
    _positive("baseline_fps", baseline_fps)
    return fps / baseline_fps


def monthly_cost(
    fps: float,
    baseline_fps: float,
    devices: int,
    usd_per_device_hour: float,
    hours_per_month: float = HOURS_PER_MONTH,
) -> float:
    """Dollars a month to serve the load of ``devices`` baseline devices with this backend."""
    _positive("fps", fps)
    return devices * usd_per_device_hour * hours_per_month * baseline_fps / fps


def monthly_savings(
    fps: float,
    baseline_fps: float,
    devices: int,
    usd_per_device_hour: float,
    hours_per_month: float = HOURS_PER_MONTH,
) -> float:
    """Baseline monthly cost minus this backend's, for the same load (negative: it costs more)."""
    baseline = monthly_cost(
        baseline_fps, baseline_fps, devices, usd_per_device_hour, hours_per_month
    )
    return baseline - monthly_cost(fps, baseline_fps, devices, usd_per_device_hour, hours_per_month)


def break_even_hours(
    *,
    effort_hours: float,
    usd_per_effort_hour: float,
    fps: float,
    baseline_fps: float,
    devices: int,
    usd_per_device_hour: float,
) -> float:
    """Hours of operation on ``devices`` devices until the savings repay the one-off effort.

    ``0`` when there is no effort; ``inf`` when the backend saves nothing (not faster).
    """
    effort_usd = effort_hours * usd_per_effort_hour
    if effort_usd <= 0:
        return 0.0
    savings_per_hour = monthly_savings(fps, baseline_fps, devices, usd_per_device_hour, 1.0)
    if savings_per_hour <= 0:
        return math.inf
    return effort_usd / savings_per_hour
