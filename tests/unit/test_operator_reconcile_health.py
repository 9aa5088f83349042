"""Liveness: a reconcile that hangs, or reconciles that cannot reach the API server, fail the
probe once they last longer than the stall limit; an answer from the server clears it."""

from __future__ import annotations

import threading
from typing import Any

import kopf
import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ReadTimeoutError

from lipsync_operator.handlers import reconciles_are_live
from lipsync_operator.liveness import ReconcileHealth

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _unreachable() -> ReadTimeoutError:
    return ReadTimeoutError(None, "/apis", "Read timed out. (read timeout=30)")  # type: ignore[arg-type]


def test_a_reconcile_running_past_the_limit_is_a_problem_until_it_ends() -> None:
    clock = Clock()
    health = ReconcileHealth(180, clock)
    started, release = threading.Event(), threading.Event()

    def hang() -> None:
        with health.reconciling():
            started.set()
            release.wait()

    worker = threading.Thread(target=hang)
    worker.start()
    started.wait()
    clock.now += 180
    assert health.problem() is None
    clock.now += 1
    assert health.problem() == "a reconcile has been running for 181 s"
    release.set()
    worker.join()
    assert health.problem() is None


def test_an_unreachable_api_server_is_a_problem_after_the_limit_and_an_answer_clears_it() -> None:
    clock = Clock()
    health = ReconcileHealth(180, clock)
    for _ in range(3):
        with pytest.raises(ReadTimeoutError), health.reconciling():
            raise _unreachable()
        clock.now += 70
    assert health.problem() == "reconciles have not reached the API server for 210 s"
    # A refusal is an answer: the server is there, the model's trouble is on its status.
    with pytest.raises(ApiException), health.reconciling():
        raise ApiException(status=403)
    assert health.problem() is None
    with health.reconciling():
        pass
    assert health.problem() is None


def test_the_probe_fails_permanently_so_kopf_answers_the_request_at_once() -> None:
    clock = Clock()
    health = ReconcileHealth(10, clock)
    memo = kopf.Memo(reconcile_health=health)
    probe: Any = reconciles_are_live  # kopf's decorator types it for kopf's own call
    assert probe(memo=memo) == "ok"
    with pytest.raises(ReadTimeoutError), health.reconciling():
        raise _unreachable()
    clock.now += 11
    with pytest.raises(kopf.PermanentError, match="not reached the API server for 11 s"):
        probe(memo=memo)
