"""Progress on stderr: rich bars on a terminal, one summary line per file otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..display import rich_safe, safe_text


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


class FileProgress:
    """One file's counters; `done` is what the bar shows (including a resumed prefix)."""

    def __init__(self, reporter: Reporter, name: str, total: int, start: int, task: object) -> None:
        self.reporter = reporter
        self.name = name
        self.total = total
        self.start_offset = start
        self.done = start
        self.wire_bytes = 0
        self.t0 = time.monotonic()
        self.task = task

    def advance(self, n: int, wire: int | None = None) -> None:
        self.done += n
        self.wire_bytes += n if wire is None else wire
        if self.task is not None:
            self.reporter._progress.update(self.task, completed=self.done)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def summary(self, verdict: str) -> str:
        moved = self.done - self.start_offset
        dt = self.elapsed
        rate = moved / dt if dt > 0 else 0.0
        parts = [f"{self.name}: {human_size(self.total)}"]
        if self.start_offset:
            parts.append(f"resumed at {human_size(self.start_offset)}")
        parts.append(f"{human_size(moved)} in {dt:.2f} s ({human_size(rate)}/s)")
        if self.wire_bytes != moved and moved:
            parts.append(f"zstd {100 * self.wire_bytes / moved:.0f}%")
        return ", ".join(parts) + f" - {verdict}"


class Reporter:
    """Logs lines prefixed `gannet <role>:` and keeps one progress bar per active file."""

    def __init__(self, role: str, stream: TextIO | None = None, bars: bool | None = None) -> None:
        self.role = role
        self.stream = stream if stream is not None else sys.stderr
        if bars is None:
            bars = bool(getattr(self.stream, "isatty", lambda: False)())
        self._progress = None
        self._console = None
        if bars:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)

            self._console = Console(file=self.stream)
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(),
                console=self._console, transient=True,
            )
            self._progress.start()

    def log(self, message: str) -> None:
        # Lines carry peer-chosen names and reasons: always one line of inert text.
        line = safe_text(f"gannet {self.role}: {message}")
        if self._console is not None:
            self._console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def start_file(self, name: str, total: int, start: int = 0) -> FileProgress:
        task = None
        if self._progress is not None:
            task = self._progress.add_task(rich_safe(name), total=total, completed=start)
        return FileProgress(self, name, total, start, task)

    def finish_file(self, fp: FileProgress, verdict: str) -> None:
        if fp.task is not None and self._progress is not None:
            self._progress.remove_task(fp.task)
            fp.task = None
        self.log(fp.summary(verdict))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
