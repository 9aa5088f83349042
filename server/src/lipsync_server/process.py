"""A ``lipsync serve`` process on loopback: started, awaited until SERVING, stopped with SIGTERM.

Used by ``lipsync demo``, the benchmark matrix and the component tests.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from lipsync_contract.errors import LipSyncError
from lipsync_server.client import wait_until_serving

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``with ServerProcess(model, avatar, log, max_batch_size=2) as server: server.target``.

    ``grpc_port`` 0 picks a free port; ``metrics`` serves metrics on another free port; health
    is also served alone on a third, plaintext (``health_target``), so a server that needs TLS
    or a token can be awaited the way a kubelet probes it. Keyword
    settings become flags (``max_batch_size=2`` -> ``--max-batch-size 2``), ``extra_args`` are
    passed as they are. Ready when grpc.health reports SERVING (after the warm-up).
    """

    def __init__(
        self,
        model: Path,
        avatar: Path,
        log_path: Path,
        *,
        extra_args: Sequence[str] = (),
        grpc_port: int = 0,
        metrics: bool = True,
        startup_timeout: float = 300.0,
        **settings: object,
    ) -> None:
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = free_port() if metrics else 0
        self.target = f"{LOOPBACK}:{self.grpc_port}"
        self.health_target = f"{LOOPBACK}:{free_port()}"
        self.metrics_url = f"http://{LOOPBACK}:{self.metrics_port}/metrics"
        self.log_path = log_path
        self._startup_timeout = startup_timeout
        self._command = [
            sys.executable,
            "-m",
            "lipsync_server",
            "--model",
            str(model),
            "--avatar",
            str(avatar),
            "--host",
            LOOPBACK,
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            self.health_target.rpartition(":")[2],
        ]
        for name, value in settings.items():
            self._command += [f"--{name.replace('_', '-')}", str(value)]
        self._command += list(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[str] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("server process not started")
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> ServerProcess:
        if self._process is not None:
            raise RuntimeError("server process already started")
        self._log = self.log_path.open("w")
        self._process = subprocess.Popen(self._command, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            asyncio.run(wait_until_serving(self.health_target, self._startup_timeout, self._exited))
        except TimeoutError:
            self.stop()
            raise LipSyncError(f"the server did not start; see {self.log_path}") from None
        return self

    def _exited(self) -> bool:
        return self.process.poll() is not None

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown) without waiting."""
        self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM, then wait; returns the exit code (killed after ``timeout``)."""
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        if self._log is not None:
            self._log.close()
        return code

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
