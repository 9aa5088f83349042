"""The operator's API calls against an endpoint that accepts connections and never answers:
they fail within their timeout instead of hanging a reconcile (or the Lease) for good."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client
from urllib3.exceptions import HTTPError

from lipsync_operator.kube import BoundedApiClient, DynamicClient

pytestmark = pytest.mark.component

TIMEOUT = 1.0
# Far above one try of TIMEOUT (the client does not retry underneath its callers), far below
# the alternatives (hanging for good, or the client's own 3 x BOUND in the last test), so a loaded
# machine cannot fail it.
BOUND = 20.0


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP listener on loopback that accepts every connection and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def _bounded(host: str) -> BoundedApiClient:
    return BoundedApiClient(TIMEOUT, client.Configuration(host=host))


def test_a_call_to_a_silent_api_server_fails_within_its_timeout(silent_server: str) -> None:
    started = time.monotonic()
    with pytest.raises(HTTPError):
        client.CoordinationV1Api(_bounded(silent_server)).read_namespaced_lease("lease", "ns")
    assert time.monotonic() - started < BOUND


def test_the_dynamic_client_gives_up_on_a_silent_api_server_too(silent_server: str) -> None:
    started = time.monotonic()
    with pytest.raises(HTTPError):
        DynamicClient(_bounded(silent_server))  # discovery is its first call
    assert time.monotonic() - started < BOUND


def test_a_call_that_sets_its_own_timeout_keeps_it(silent_server: str) -> None:
    api = BoundedApiClient(3 * BOUND, client.Configuration(host=silent_server))
    started = time.monotonic()
    with pytest.raises(HTTPError):
        client.CoreV1Api(api).list_namespace(_request_timeout=TIMEOUT)
    assert time.monotonic() - started < BOUND
