"""Client pods of the runtime image: what PodSecurity `restricted` asks of them, and reading
`lipsync bench run`'s result out of a pod log."""

from __future__ import annotations

import json

import pytest

from lipsync_testbed.clientpods import (
    RESULT_MARKER,
    bench_command,
    bench_result,
    client_pod,
    runtime_image,
)
from lipsync_testbed.nodebed import IMAGE_UID

pytestmark = pytest.mark.unit


def test_a_client_pod_meets_restricted_and_runs_the_local_runtime_image() -> None:
    pod = client_pod("probe", ["lipsync", "--version"])
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    [container] = spec["containers"]
    assert container["image"] == runtime_image()
    assert container["imagePullPolicy"] == "Never"  # imported into the nodes, no registry
    assert container["command"] == ["lipsync", "--version"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # A read-only root, and an emptyDir to write to.
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/tmp"}]
    assert spec["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}}]


def test_the_bench_result_follows_its_marker_whatever_came_before() -> None:
    command = bench_command(["--target", "anna.models.svc:8001", "--streams", "1"])
    assert command[:2] == ["sh", "-c"]
    assert command[2] == (
        "lipsync bench run --target anna.models.svc:8001 --streams 1 -o /tmp/result.json"
        f" && echo '{RESULT_MARKER}' && cat /tmp/result.json"
    )
    result = {"levels": [{"streams": 1, "frames_sent": 12, "nested": {"a": [1, 2]}}]}
    log = "\n".join(
        [
            "{",  # progress output that looks like JSON, before the marker
            "  1 streams:     0.98 frames/s, p99   1020.0 ms, 12/12 frames, errors 0",
            RESULT_MARKER,
            json.dumps(result, indent=2),
        ]
    )
    assert bench_result(log) == result


def test_a_log_without_a_result_is_an_error() -> None:
    with pytest.raises(ValueError, match="no bench result in the log"):
        bench_result("error: no server answered\n")
