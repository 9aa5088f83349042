"""How KWOK's node heartbeats and the controller-manager's node health check fit together.

KWOK renews each node's Lease every quarter of the lease duration (as the kubelet does);
kube-controller-manager's node lifecycle controller marks a node NotReady when neither its
Lease nor its status changed for ``--node-monitor-grace-period``. On a small machine hosting
a thousand fake nodes the renewals fall behind and healthy nodes flap NotReady; a longer
lease (fewer renewals) with a grace period scaled to it keeps them Ready.
"""

from __future__ import annotations

from dataclasses import dataclass

# Lease renewals per lease duration (KWOK and the kubelet renew every duration / 4).
RENEWALS_PER_LEASE = 4
# Heartbeats the grace period must cover ("N times nodeStatusUpdateFrequency, N the retries
# allowed": the kubelet's nodeStatusUpdateRetry is 5; 5 x 10 s is the default 50 s).
MISSED_HEARTBEATS = 5
# The grace period should exceed HTTP2_PING_TIMEOUT_SECONDS + HTTP2_READ_IDLE_TIMEOUT_SECONDS
# (15 s + 30 s by default), after which a client notices a dead connection.
HTTP2_DETECTION_SECONDS = 45
# kube-controller-manager's own --node-startup-grace-period default.
DEFAULT_STARTUP_GRACE_SECONDS = 60


@dataclass(frozen=True)
class NodeHeartbeats:
    """KWOK's node lease duration and, optionally, the grace period nodes get before NotReady.

    The defaults are the test bed's usual ones (40 s leases, the controller-manager's default
    grace period). ``grace_seconds`` None leaves the controller-manager's flags as they are.
    """

    lease_seconds: int = 40
    grace_seconds: int | None = None

    def __post_init__(self) -> None:
        if self.lease_seconds < RENEWALS_PER_LEASE:
            raise ValueError(
                f"node lease duration must be at least {RENEWALS_PER_LEASE} s, "
                f"got {self.lease_seconds}"
            )
        if self.grace_seconds is not None:
            needed = minimum_grace_seconds(self.lease_seconds)
            if self.grace_seconds < needed:
                raise ValueError(
                    f"node monitor grace period {self.grace_seconds} s is shorter than "
                    f"{needed} s: {MISSED_HEARTBEATS} lease renewals of a "
                    f"{self.lease_seconds} s lease (and more than {HTTP2_DETECTION_SECONDS} s)"
                )

    @property
    def renew_interval_seconds(self) -> float:
        return self.lease_seconds / RENEWALS_PER_LEASE

    def kwok_args(self) -> list[str]:
        return [f"--node-lease-duration-seconds={self.lease_seconds}"]

    def controller_manager_args(self) -> list[str]:
        if self.grace_seconds is None:
            return []
        # A node KWOK has not initialised yet gets at least as long as a running one.
        startup = max(self.grace_seconds, DEFAULT_STARTUP_GRACE_SECONDS)
        return [
            f"--node-monitor-grace-period={self.grace_seconds}s",
            f"--node-startup-grace-period={startup}s",
        ]


def minimum_grace_seconds(lease_seconds: int) -> int:
    """The shortest grace period that tolerates the missed renewals of ``lease_seconds`` leases."""
    missed = -(-MISSED_HEARTBEATS * lease_seconds // RENEWALS_PER_LEASE)  # ceiling
    return max(missed, HTTP2_DETECTION_SECONDS + 1)
