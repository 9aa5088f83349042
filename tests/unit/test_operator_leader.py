"""Leader election settings, a candidate's tries, and the waiting replica's liveness endpoint
(no cluster needed)."""

from __future__ import annotations

import logging
import urllib.request
from types import SimpleNamespace
from typing import Any, cast

import pytest
from urllib3.exceptions import MaxRetryError

from lipsync_operator import leader
from lipsync_operator.health import parse_endpoint, waiting_health
from lipsync_operator.leader import ElectionSettings
from lipsync_testbed.processes import free_port

pytestmark = pytest.mark.unit


def test_election_timings_must_leave_room_to_renew() -> None:
    ElectionSettings("lipsync-operator", "lipsync-system", "pod-a")  # client-go's defaults
    with pytest.raises(ValueError, match="lease duration > renew deadline"):
        ElectionSettings("l", "ns", "pod-a", lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match="retry period"):
        ElectionSettings("l", "ns", "pod-a", renew_deadline=2, retry_period=2)


def test_a_lease_call_ends_before_a_waiting_replica_may_take_over() -> None:
    settings = ElectionSettings("lipsync-operator", "lipsync-system", "pod-a")
    # The last renewal at t, the next try at t + retry, tries until t + retry + renew deadline;
    # one more try (a read and a write) must end by t + lease duration.
    latest_end = settings.retry_period + settings.renew_deadline + 2 * settings.call_timeout
    assert latest_end <= settings.lease_duration
    assert settings.call_timeout == 1.5


def test_liveness_urls_parse_like_kopfs_and_bad_ones_say_why() -> None:
    assert parse_endpoint("http://10.0.0.7:8080/healthz") == ("10.0.0.7", 8080, "/healthz")
    assert parse_endpoint("http://0.0.0.0:8080") == ("0.0.0.0", 8080, "/")
    for bad in ("https://x:1/h", "http://x/h", "http://x:8o8o/h"):
        with pytest.raises(ValueError, match="http://HOST:PORT/PATH"):
            parse_endpoint(bad)


def test_a_waiting_replica_answers_its_liveness_probe_and_frees_the_port() -> None:
    import socket

    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    with waiting_health(url):
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert missing.value.code == 404
    with socket.socket() as again:  # kopf (aiohttp, SO_REUSEADDR) binds it once this one leads
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()


class ScriptedElection:
    """The client's LeaderElection as `_acquire` uses it: one scripted outcome per try."""

    def __init__(self, *holders: str | None) -> None:
        self._holders = list(holders)  # None: this try acquires
        self.observed_record: Any = None

    def try_acquire_or_renew(self) -> bool:
        holder = self._holders.pop(0)
        if holder is None:
            return True
        self.observed_record = SimpleNamespace(holder_identity=holder)
        return False


def test_a_waiting_candidate_says_once_whom_it_waits_for(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("lipsync_operator.leader.time.sleep", lambda _: None)
    posted: list[tuple[str, str]] = []
    events = SimpleNamespace(post=lambda reason, message: posted.append((reason, message)))
    settings = ElectionSettings("lease", "ns", "me")
    with caplog.at_level(logging.INFO, logger="lipsync_operator.leader"):
        previous = leader._acquire(
            ScriptedElection("other", "other", None), settings, cast(leader.LeaseEvents, events)
        )
    assert previous == "other"
    assert caplog.text.count("is held by other: me waits to take over") == 1
    assert posted == [("StandingBy", "me waits: other holds the lease")]


class UnreachableLock:
    """A Lease lock whose API server cannot be reached."""

    name, namespace, identity = "lease", "ns", "me"

    def get(self, name: str, namespace: str) -> Any:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        raise MaxRetryError(None, path)  # type: ignore[arg-type]


def test_an_api_server_out_of_reach_is_a_failed_try_not_an_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = leader.electionconfig.Config(
        UnreachableLock(), 15, 10, 2, onstarted_leading=lambda: None, onstopped_leading=lambda: None
    )
    with caplog.at_level(logging.WARNING, logger="lipsync_operator.leader"):
        assert leader.Election(config).try_acquire_or_renew() is False
    assert "cannot reach the API server for lease ns/lease" in caplog.text
