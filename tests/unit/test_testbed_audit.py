"""Counting LIST requests by client from the apiserver's audit log."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import yaml

from lipsync_testbed.audit import LIST_AUDIT_POLICY, client_name, count_lists

pytestmark = pytest.mark.unit


def _event(verb: str, agent: str, resource: str, at: str) -> str:
    return json.dumps({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete",
        "verb": verb, "userAgent": agent, "requestReceivedTimestamp": at,
        "objectRef": {"resource": resource, "apiVersion": "v1"},
    })  # fmt: skip


def _unix(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_client_name_is_the_program_of_the_user_agent() -> None:
    assert client_name("kopf/1.37.2") == "kopf"
    assert client_name("kube-controller-manager/v1.36.3 (linux/amd64) kubernetes/abc") == (
        "kube-controller-manager"
    )
    assert client_name("") == "-"


def test_counts_lists_in_the_window_by_client_and_resource() -> None:
    lines = [
        _event("list", "kopf/1.37.2", "nodes", "2026-12-02T02:00:00.100000Z"),
        _event("list", "kopf/1.37.2", "nodes", "2026-12-02T02:00:05.000000Z"),
        _event("list", "kube-controller-manager/v1.36.3", "pods", "2026-12-02T02:00:06Z"),
        _event("watch", "kopf/1.37.2", "pods", "2026-12-02T02:00:06Z"),  # not a list
        _event("list", "kopf/1.37.2", "pods", "2026-12-02T01:59:59Z"),  # before the window
        _event("list", "kopf/1.37.2", "pods", "2026-12-02T02:00:11Z"),  # after it
        "not json",
    ]
    counts = count_lists(lines, _unix("2026-12-02T02:00:00"), _unix("2026-12-02T02:00:10"))
    assert counts == {("kopf", "nodes"): 2, ("kube-controller-manager", "pods"): 1}


def test_policy_logs_only_lists() -> None:
    policy = yaml.safe_load(LIST_AUDIT_POLICY)
    assert policy["kind"] == "Policy"
    assert policy["rules"] == [{"level": "Metadata", "verbs": ["list"]}, {"level": "None"}]
