"""Stage-by-stage progress: rich on a terminal, one JSON object per line otherwise (Job logs)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

STAGES = ("ingest", "optimize", "precision", "build", "verify", "measure", "publish")


class Progress(Protocol):
    def stage(self, name: str) -> Any:
        """Context manager around one stage; reports its start, end and duration."""
        ...

    def info(self, message: str, **fields: Any) -> None: ...


class JsonLinesProgress:
    """Structured log lines on stderr: ``{"ts", "level", "stage", "event", ...}``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._stage = ""

    def _emit(self, event: str, level: str = "info", **fields: Any) -> None:
        record = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "stage": self._stage,
            "event": event,
            **fields,
        }
        self._stream.write(json.dumps(record, default=str) + "\n")
        self._stream.flush()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._stage = name
        start = time.perf_counter()
        self._emit("start")
        try:
            yield
        except BaseException as exc:
            self._emit("failed", level="error", error=str(exc).strip().split("\n")[0])
            raise
        self._emit("done", seconds=round(time.perf_counter() - start, 3))

    def info(self, message: str, **fields: Any) -> None:
        self._emit(message, **fields)


class RichProgress:
    """A progress bar over the stages, with a line per finished stage."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} stages"),
            TimeElapsedColumn(),
            console=self._console,
            transient=True,
        )
        self._task = self._progress.add_task("build", total=len(STAGES))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self._progress.start()
        self._progress.update(self._task, description=name)
        try:
            yield
        except BaseException:
            self._progress.stop()
            self._console.print(f"[red]x[/red] {name} failed")
            raise
        self._progress.advance(self._task)
        self._console.print(f"[green]ok[/green] {name} ({time.perf_counter() - start:.1f} s)")
        if self._progress.finished:
            self._progress.stop()

    def info(self, message: str, **fields: Any) -> None:
        details = " ".join(f"{key}={value}" for key, value in fields.items())
        self._console.print(f"  {message} {details}".rstrip())


def progress_for(stream: TextIO) -> Progress:
    """Rich when ``stream`` is a terminal, JSON lines otherwise."""
    return RichProgress() if stream.isatty() else JsonLinesProgress(stream)


class LogToProgress(logging.Handler):
    """Forwards warnings from library code (e.g. random calibration) into the progress stream."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(level=logging.WARNING)
        self._progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self._progress.info(record.getMessage(), level=record.levelname.lower())
