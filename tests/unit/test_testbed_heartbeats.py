"""Node lease duration and the controller-manager's grace period: the flags and their limits."""

from __future__ import annotations

import pytest

from lipsync_testbed.heartbeats import NodeHeartbeats, minimum_grace_seconds

pytestmark = pytest.mark.unit


def test_default_keeps_the_usual_test_bed_flags() -> None:
    beats = NodeHeartbeats()
    assert beats.kwok_args() == ["--node-lease-duration-seconds=40"]
    assert beats.controller_manager_args() == []
    assert beats.renew_interval_seconds == 10.0


def test_minimum_grace_covers_five_renewals() -> None:
    # 40 s leases renew every 10 s: the controller-manager's own 50 s default.
    assert minimum_grace_seconds(40) == 50
    assert minimum_grace_seconds(240) == 300
    assert minimum_grace_seconds(42) == 53  # 52.5 rounded up
    # Never below the HTTP/2 dead-connection detection time.
    assert minimum_grace_seconds(8) == 46


def test_grace_period_flags() -> None:
    beats = NodeHeartbeats(lease_seconds=240, grace_seconds=300)
    assert beats.kwok_args() == ["--node-lease-duration-seconds=240"]
    assert beats.controller_manager_args() == [
        "--node-monitor-grace-period=300s",
        "--node-startup-grace-period=300s",
    ]


def test_startup_grace_never_below_the_default() -> None:
    beats = NodeHeartbeats(lease_seconds=8, grace_seconds=50)
    assert "--node-startup-grace-period=60s" in beats.controller_manager_args()


def test_grace_shorter_than_the_renewals_is_refused() -> None:
    with pytest.raises(ValueError, match=r"grace period 100 s is shorter than 300 s"):
        NodeHeartbeats(lease_seconds=240, grace_seconds=100)


def test_lease_too_short_to_renew_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 4 s"):
        NodeHeartbeats(lease_seconds=3)
