"""Start, identify and stop the test bed's processes (always by pid)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ManagedProcess:
    """A process started by the test bed: its name, pid, executable and log file."""

    name: str
    pid: int
    executable: str
    log_path: Path

    def to_json(self) -> dict[str, str | int]:
        return {
            "name": self.name,
            "pid": self.pid,
            "executable": self.executable,
            "log_path": str(self.log_path),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ManagedProcess:
        pid = data["pid"]
        if not isinstance(pid, int):
            raise ValueError(f"bad pid in state: {pid!r}")
        return cls(
            name=str(data["name"]),
            pid=pid,
            executable=str(data["executable"]),
            log_path=Path(str(data["log_path"])),
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
    executable: str | None = None,
) -> ManagedProcess:
    """Start `argv` in its own session with stdout and stderr appended to log_dir/name.log.

    With `die_with_parent` the kernel SIGKILLs the process when the thread that
    started it exits, so a killed test run leaves nothing behind (Linux only). `setpriv`
    asks for that in the child: Python code between fork and exec (a `preexec_fn`) can abort
    the child of a process whose other threads hold locks.
    `executable` is the program the process runs in the end, when argv[0] is a wrapper that
    execs it (nsenter): stop() checks the pid against it.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    executable = executable or str(argv[0])
    if die_with_parent:
        argv = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
    with log_path.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    if die_with_parent:
        _wait_past_setpriv(proc.pid)
    log.info("started %s (pid %d), log %s", name, proc.pid, log_path)
    return ManagedProcess(name=name, pid=proc.pid, executable=executable, log_path=log_path)


def _wait_past_setpriv(pid: int, timeout: float = 10.0) -> None:
    """Return once `setpriv` has exec'd the program: its death signal is armed by then (a parent
    killed before that would leave the program running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(os.readlink(f"/proc/{pid}/exe")).name != "setpriv":
                return
        except OSError:
            return  # gone already: exec failed or it exited
        time.sleep(0.002)


def _proc_state(pid: int) -> str | None:
    """The state letter from /proc/<pid>/stat, None when the pid does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) S ..." - comm may contain spaces or parentheses.
    return stat.rsplit(")", 1)[1].split()[0]


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def is_running(pid: int) -> bool:
    """True while the pid exists and is not a zombie (our own zombies are reaped)."""
    state = _proc_state(pid)
    if state is None:
        return False
    if state in ("Z", "X"):
        _reap(pid)
        return False
    return True


def is_same_process(proc: ManagedProcess) -> bool:
    """True when the pid is alive and still runs the recorded executable (pid reuse guard)."""
    if not is_running(proc.pid):
        return False
    try:
        exe = os.readlink(f"/proc/{proc.pid}/exe")
    except OSError:
        return False
    return os.path.realpath(proc.executable) == exe.removesuffix(" (deleted)")


def stop(proc: ManagedProcess, timeout: float = 10.0) -> None:
    """SIGTERM the process (and its session's group), then SIGKILL after `timeout` seconds."""
    if not is_same_process(proc):
        _reap(proc.pid)
        return
    log.info("stopping %s (pid %d)", proc.name, proc.pid)
    _signal(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(proc.pid):
            return
        time.sleep(0.05)
    log.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing", proc.name, proc.pid, timeout)
    _signal(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if not is_running(proc.pid):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} (pid {proc.pid}) survived SIGKILL")


def terminate(process: subprocess.Popen[str], timeout: float = 10.0) -> None:
    """SIGTERM a child started with Popen, SIGKILL it if it has not exited within ``timeout``."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _signal(pid: int, sig: signal.Signals) -> None:
    # Each process leads its own session, so its process group id is its pid.
    for send in (os.killpg, os.kill):
        try:
            send(pid, sig)
            return
        except ProcessLookupError:
            continue
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file ('' when missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
