"""A ``lipsync serve`` subprocess on loopback for the benchmark matrix and tests: free ports,
ready when GetInfo answers, stopped with SIGTERM (graceful drain) and killed if it hangs."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import grpc

from lipsync_bench.loadgen import get_info, open_channels

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``with ServerProcess(model, avatar, ["--max-batch-size", "4"]) as server: server.target``"""

    def __init__(
        self,
        model: Path,
        avatar: Path,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        ready_timeout_s: float = 300.0,
    ) -> None:
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.command = [
            sys.executable,
            "-c",
            "from lipsync_core.cli import main; main()",
            "serve",
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
            *extra_args,
        ]
        self._log_path = log_path
        self._ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def target(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("server not started")
        return self._process.pid

    def start(self) -> None:
        if self._log_path:
            self._log_file = self._log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log.info("starting %s", " ".join(self.command[3:]))
        self._process = subprocess.Popen(
            self.command,
            stdout=self._log_file or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=env,
        )
        asyncio.run(self._wait_ready())

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._ready_timeout_s
        channel = open_channels([self.target])[0]
        try:
            while True:
                if self._process is not None and self._process.poll() is not None:
                    raise RuntimeError(
                        f"lipsync serve exited with {self._process.returncode} before it was ready"
                        + (f" (log: {self._log_path})" if self._log_path else "")
                    )
                try:
                    await get_info(channel, timeout_s=1.0)
                    return
                except grpc.aio.AioRpcError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"lipsync serve not ready after {self._ready_timeout_s:.0f} s"
                        ) from None
                    await asyncio.sleep(0.5)
        finally:
            await channel.close(None)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        try:
            return self._stop(timeout_s)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def _stop(self, timeout_s: float) -> int | None:
        process = self._process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("lipsync serve did not stop in %.0f s; killing it", timeout_s)
            process.kill()
            return process.wait()

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
