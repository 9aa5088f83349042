"""Leader election between operator replicas: one Lease, one acting replica, the others wait.

Kopf's peering freezes every replica when priorities are equal, so replicas elect a leader
through a ``coordination.k8s.io`` Lease (the kubernetes client's ``leaderelection``, the same
record client-go controllers write) and only the leader runs kopf, standalone. A leader that
cannot renew within the deadline ends its process at once, before the Lease can expire and
another replica act, so no reconcile still running writes after that (client-go's controllers
exit the same way); its pod restarts as a candidate. A leader that shuts down releases the Lease
so a waiting replica takes over at its next retry.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig as _electionconfig
from kubernetes.leaderelection import leaderelection as _leaderelection
from kubernetes.leaderelection.resourcelock import leaselock as _leaselock
from urllib3.exceptions import HTTPError

from lipsync_operator.kube import BoundedApiClient

log = logging.getLogger(__name__)

# The kubernetes client is untyped; these names keep the Any at the boundary.
electionconfig: Any = _electionconfig
leaderelection: Any = _leaderelection
leaselock: Any = _leaselock

EVENT_SOURCE = "lipsync-operator"


def exit_at_once() -> None:
    """End the process now: no handler, thread or ``finally`` runs after this."""
    logging.shutdown()  # flush what was logged
    os._exit(1)


class LostLeadershipError(RuntimeError):
    """The Lease could not be renewed in time: another replica may be acting now."""


@dataclass(frozen=True)
class ElectionSettings:
    """Which Lease the replicas compete for, and client-go's default timings."""

    lease_name: str
    namespace: str
    identity: str
    lease_duration: int = 15
    renew_deadline: int = 10
    retry_period: int = 2

    @property
    def call_timeout(self) -> float:
        """How long one Lease call may take. A renewal (a read and a write) that starts just
        before the renew deadline must end before a waiting replica may take the Lease over
        (lease duration after the last renewal it saw)."""
        return max(1.0, (self.lease_duration - self.renew_deadline - self.retry_period) / 2)

    def __post_init__(self) -> None:
        # The same rules the client's election config enforces (it calls sys.exit on them).
        if not self.lease_duration > self.renew_deadline > 1.2 * self.retry_period >= 1.2:
            raise ValueError(
                "leader election needs lease duration > renew deadline > 1.2 x retry period >= 1.2 "
                f"(got {self.lease_duration}, {self.renew_deadline}, {self.retry_period})"
            )


def holder_of(lease: Any) -> str:
    """The Lease's current holder ('' when free)."""
    spec = getattr(lease, "spec", None)
    return str(getattr(spec, "holder_identity", None) or "")


class LeaseEvents:
    """Events on the Lease, so `kubectl get events` says which replica acts and which waits."""

    def __init__(self, api: client.CoreV1Api, settings: ElectionSettings) -> None:
        self._api = api
        self._settings = settings

    def post(self, reason: str, message: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{self._settings.lease_name}."),
            involved_object=client.V1ObjectReference(
                api_version="coordination.k8s.io/v1",
                kind="Lease",
                name=self._settings.lease_name,
                namespace=self._settings.namespace,
            ),
            reason=reason,
            message=message,
            type="Normal",
            source=client.V1EventSource(component=EVENT_SOURCE),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self._api.create_namespaced_event(self._settings.namespace, event)
        except ApiException as exc:  # an Event is a courtesy: never stop the operator for it
            log.warning("could not post the %s event: %s", reason, exc.reason)
        except (HTTPError, OSError) as exc:
            log.warning("could not post the %s event: %s", reason, exc)


def release(coordination: client.CoordinationV1Api, settings: ElectionSettings) -> None:
    """Give the Lease up if this replica still holds it (client-go's ReleaseOnCancel)."""
    try:
        lease = coordination.read_namespaced_lease(settings.lease_name, settings.namespace)
        if holder_of(lease) != settings.identity or lease.spec is None:
            return
        lease.spec.holder_identity = None
        lease.spec.lease_duration_seconds = 1
        coordination.replace_namespaced_lease(settings.lease_name, settings.namespace, lease)
        log.info("released lease %s/%s", settings.namespace, settings.lease_name)
    except ApiException as exc:
        log.warning("could not release lease %s: %s", settings.lease_name, exc.reason)
    except (HTTPError, OSError) as exc:  # it expires on its own
        log.warning("could not release lease %s: %s", settings.lease_name, exc)


class Election(leaderelection.LeaderElection):  # type: ignore[misc]  # the client is untyped
    """The client's election, where an API server out of reach (refused, timed out) is a failed
    try, as in client-go: a candidate tries again, a leader keeps trying until its renew deadline
    and then steps down, instead of the exception ending the thread that renews."""

    def try_acquire_or_renew(self) -> bool:
        try:
            return bool(super().try_acquire_or_renew())
        except (HTTPError, OSError) as exc:
            lock = self.election_config.lock
            log.warning(
                "cannot reach the API server for lease %s/%s: %s", lock.namespace, lock.name, exc
            )
            return False


def _acquire(election: Any, settings: ElectionSettings, events: LeaseEvents) -> str:
    """Try for the Lease every retry period until this replica holds it, saying once per holder
    who holds it meanwhile. Returns the last other holder seen ('' when none).

    The holder is read from each try, not once up front: replicas that start together may find
    no Lease at first and lose it a moment later to the other.
    """
    where = f"{settings.namespace}/{settings.lease_name}"
    announced = ""
    while not election.try_acquire_or_renew():
        holder = str(getattr(election.observed_record, "holder_identity", None) or "")
        if holder and holder not in (settings.identity, announced):
            log.warning(
                "lease %s is held by %s: %s waits to take over", where, holder, settings.identity
            )
            events.post("StandingBy", f"{settings.identity} waits: {holder} holds the lease")
            announced = holder
        time.sleep(settings.retry_period)
    return announced


def lead(
    settings: ElectionSettings,
    operate: Callable[[threading.Event], None],
    waiting: contextlib.AbstractContextManager[None] | None = None,
    api: client.ApiClient | None = None,
    on_lost: Callable[[], None] = exit_at_once,
) -> None:
    """Wait for the Lease (inside ``waiting``), then run ``operate(stop)`` while renewing it.

    ``operate`` must return soon after ``stop`` is set. When renewal fails within the renew
    deadline, ``on_lost`` runs on the renewing thread (by default: the process exits at once);
    an ``on_lost`` that returns makes this raise LostLeadershipError once ``operate`` has.
    """
    api = api or BoundedApiClient(timeout=settings.call_timeout)
    coordination = client.CoordinationV1Api(api)
    events = LeaseEvents(client.CoreV1Api(api), settings)
    # The client logs every retry of a waiting replica; this module says what matters once.
    logging.getLogger("leaderelection").setLevel(logging.WARNING)

    where = f"{settings.namespace}/{settings.lease_name}"
    lock = leaselock.LeaseLock(settings.lease_name, settings.namespace, settings.identity)
    lock.api_instance = coordination  # the lock builds a client on the default configuration
    stop = threading.Event()
    lost = threading.Event()

    def lose() -> None:
        lost.set()
        stop.set()
        log.error(
            "%s could not renew lease %s within %d s: exiting",
            settings.identity,
            where,
            settings.renew_deadline,
        )
        # Said if the API server answers at once; the exit does not wait for it to answer.
        message = f"{settings.identity} could not renew the lease and exits"
        notice = threading.Thread(target=events.post, args=("LeaderLost", message), daemon=True)
        notice.start()
        notice.join(timeout=0.5)
        on_lost()

    config = electionconfig.Config(
        lock,
        settings.lease_duration,
        settings.renew_deadline,
        settings.retry_period,
        onstarted_leading=lambda: None,
        onstopped_leading=lambda: None,  # renew() below handles a failed renewal
    )
    election = Election(config)
    with waiting or contextlib.nullcontext():
        holder = _acquire(election, settings, events)
    previous = f" (after {holder})" if holder else ""
    log.info("%s acquired lease %s%s: this replica acts", settings.identity, where, previous)
    events.post("LeaderElection", f"{settings.identity} became leader{previous}")

    def renew() -> None:
        election.renew_loop(stop)
        if not stop.is_set():
            lose()

    renewer = threading.Thread(target=renew, name="lease-renewal", daemon=True)
    renewer.start()
    try:
        operate(stop)
    finally:
        stop.set()
        renewer.join(timeout=settings.retry_period * 2)
        if not lost.is_set():
            release(coordination, settings)
    if lost.is_set():
        raise LostLeadershipError(f"{settings.identity} lost lease {where}: exiting")
