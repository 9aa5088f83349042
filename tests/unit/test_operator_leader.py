"""Leader election settings and the waiting replica's liveness endpoint (no cluster needed)."""

from __future__ import annotations

import urllib.request

import pytest

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
