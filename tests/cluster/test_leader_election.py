"""Leader election against a real API server: two candidates started at the same moment, as the
two replicas of the operator's Deployment are."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from kubernetes import client

from lipsync_operator.leader import ElectionSettings, lead
from lipsync_testbed import wait_for

pytestmark = pytest.mark.cluster

LEASE = "election-test"


@dataclass
class Candidate:
    """One replica: acts until told to stop, and notes whether it acted."""

    identity: str
    acting: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def operate(self, stop: threading.Event) -> None:
        self.acting.set()
        while not (stop.is_set() or self.done.is_set()):
            stop.wait(0.1)


@pytest.fixture
def candidates(
    kube_api: client.ApiClient, kube_namespace: str
) -> Iterator[tuple[Candidate, Candidate]]:
    pair = (Candidate("replica-a"), Candidate("replica-b"))
    start = threading.Barrier(len(pair))

    def run(candidate: Candidate) -> None:
        settings = ElectionSettings(
            LEASE, kube_namespace, candidate.identity,
            lease_duration=4, renew_deadline=3, retry_period=1,
        )  # fmt: skip
        start.wait()
        lead(settings, candidate.operate, api=kube_api)

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in pair]
    for thread in threads:
        thread.start()
    yield pair
    for candidate in pair:
        candidate.done.set()
    for thread in threads:
        thread.join(timeout=30)


def _event_messages(api: client.ApiClient, namespace: str, reason: str) -> list[str]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"reason={reason}"
    )
    return [event.message or "" for event in events.items]


def test_candidates_started_together_elect_one_the_other_says_whom_it_waits_for_then_takes_over(
    kube_api: client.ApiClient,
    kube_namespace: str,
    candidates: tuple[Candidate, Candidate],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lipsync_operator.leader")
    leader = wait_for(
        lambda: next((c for c in candidates if c.acting.is_set()), None),
        timeout=30,
        description="a candidate acting",
    )
    [standby] = [c for c in candidates if c is not leader]
    waiting = f"is held by {leader.identity}: {standby.identity} waits to take over"
    assert wait_for(lambda: waiting in caplog.text, timeout=15, description="the standby's log")
    assert not standby.acting.is_set()
    assert wait_for(
        lambda: _event_messages(kube_api, kube_namespace, "StandingBy"),
        timeout=15,
        description="a StandingBy event",
    ) == [f"{standby.identity} waits: {leader.identity} holds the lease"]

    leader.done.set()  # a clean shutdown releases the Lease
    assert standby.acting.wait(timeout=15), "the standby did not take over"
    lease = f"{kube_namespace}/{LEASE}"
    assert f"{standby.identity} acquired lease {lease} (after {leader.identity})" in caplog.text
    assert caplog.text.count("waits to take over") == 1
