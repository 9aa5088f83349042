"""A container's probes, really probed: gRPC health, HTTP GET, TCP connect and exec.

`ProbeTracker` holds the kubelet's bookkeeping for one probe (initial delay,
period, success and failure thresholds); `probe_once` does one attempt against
the pod's address.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes import client


@dataclass(frozen=True)
class ProbeContext:
    """What a probe needs of its container: the pod address, named ports, and for exec
    probes an argv mapper and the container's environment."""

    pod_ip: str
    ports: Mapping[str, int]
    env: Mapping[str, str]
    exec_argv: Callable[[Sequence[str]], list[str]]
    cwd: str | None = None


def _port(value: int | str | None, ports: Mapping[str, int]) -> int:
    if isinstance(value, int):
        return value
    if value is None:
        raise ValueError("probe without a port")
    if value.isdigit():
        return int(value)
    if value not in ports:
        raise ValueError(f"probe names port {value!r}, which the container does not declare")
    return ports[value]


def probe_once(probe: client.V1Probe, ctx: ProbeContext) -> tuple[bool, str]:
    """One attempt; (success, reason on failure)."""
    timeout = float(probe.timeout_seconds or 1)
    try:
        if probe.grpc is not None:
            return _grpc(ctx.pod_ip, probe.grpc, timeout)
        if probe.http_get is not None:
            return _http(probe.http_get, ctx, timeout)
        if probe.tcp_socket is not None:
            host = probe.tcp_socket.host or ctx.pod_ip
            port = _port(probe.tcp_socket.port, ctx.ports)
            with socket.create_connection((host, port), timeout=timeout):
                return True, ""
        if probe.var_exec is not None:
            return _exec(probe.var_exec.command or [], ctx, timeout)
    except (OSError, ValueError, grpc.RpcError, http.client.HTTPException) as exc:
        return False, str(exc) or type(exc).__name__
    return False, "probe has no handler"


def _grpc(pod_ip: str, action: client.V1GRPCAction, timeout: float) -> tuple[bool, str]:
    with grpc.insecure_channel(f"{pod_ip}:{action.port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=action.service or ""), timeout=timeout
        )
    if reply.status == health_pb2.HealthCheckResponse.SERVING:
        return True, ""
    return (
        False,
        f"gRPC health status {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}",
    )


def _http(action: client.V1HTTPGetAction, ctx: ProbeContext, timeout: float) -> tuple[bool, str]:
    host = action.host or ctx.pod_ip
    port = _port(action.port, ctx.ports)
    conn: http.client.HTTPConnection
    if (action.scheme or "HTTP").upper() == "HTTPS":
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=insecure)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {h.name: h.value for h in action.http_headers or []}
    try:
        conn.request("GET", action.path or "/", headers=headers)
        status = conn.getresponse().status
    finally:
        conn.close()
    if 200 <= status < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {status}"


def _exec(command: Sequence[str], ctx: ProbeContext, timeout: float) -> tuple[bool, str]:
    try:
        result = subprocess.run(
            ctx.exec_argv(command),
            env=dict(ctx.env),
            cwd=ctx.cwd,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"command timed out after {timeout:.0f}s"
    if result.returncode == 0:
        return True, ""
    output = (result.stdout + result.stderr).decode(errors="replace").strip()
    return False, f"exit code {result.returncode}: {output[-200:]}"


@dataclass
class ProbeTracker:
    """The kubelet's state for one probe of one container run.

    `due(now)` says when to probe next; `record(ok)` returns the probe's verdict
    once a threshold is crossed: True (success threshold reached), False (failure
    threshold reached) or None (no change yet).
    """

    probe: client.V1Probe
    started: float
    last: float = field(default=-1.0)
    successes: int = 0
    failures: int = 0
    result: bool | None = None

    def due(self, now: float) -> bool:
        if now < self.started + (self.probe.initial_delay_seconds or 0):
            return False
        return self.last < 0 or now >= self.last + (self.probe.period_seconds or 10)

    def record(self, ok: bool, now: float | None = None) -> bool | None:
        self.last = time.monotonic() if now is None else now
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= (self.probe.success_threshold or 1) and self.result is not True:
                self.result = True
                return True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= (self.probe.failure_threshold or 3) and self.result is not False:
                self.result = False
                return False
        return None
