"""Progress on stderr: rich bars on a terminal, one summary line per file otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from ..display import rich_safe, safe_text

if TYPE_CHECKING:
    import asyncio

    from rich.console import Console
    from rich.progress import Progress, TaskID


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


class FileProgress:
    """One file's counters; `done` is what the bar shows (including a resumed prefix)."""

    def __init__(self, reporter: Reporter, name: str, total: int, start: int,
                 task: TaskID | None) -> None:
        self.reporter = reporter
        self.name = name
        self.total = total
        self.start_offset = start
        self.done = start
        self.wire_bytes = 0
        self.t0 = time.monotonic()
        self.task = task
        # (when, done) of each advance before the bar is shown: replayed into
        # it, so that its rate and time left are known from its first frame
        self.history: list[tuple[float, int]] = []

    HISTORY = 256  # advances kept for the replay, at most

    def advance(self, n: int, wire: int | None = None) -> None:
        self.done += n
        self.wire_bytes += n if wire is None else wire
        progress = self.reporter._progress
        if self.task is not None and progress is not None:
            progress.update(self.task, completed=self.done)
        elif self.reporter._bars:
            self.history.append((time.monotonic(), self.done))
            if len(self.history) > self.HISTORY:
                del self.history[: -self.HISTORY // 2]
            self.reporter._moved()

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
    """Logs lines prefixed `gannet <role>:` and keeps one progress bar per active file.

    On a terminal the bars are rich's, but rich is not loaded until a file
    has been moving for BARS_AFTER seconds: loading it takes 40-100 ms, which
    spent at start would delay the first datagram (BENCHMARKS.md, start-up),
    and a transfer done sooner would only have flashed a bar anyway (they are
    transient). The loading runs on a thread while the transfer goes on; the
    bars are built on the event loop when it is done."""

    BARS_AFTER = 0.1  # seconds

    def __init__(self, role: str, stream: TextIO | None = None, bars: bool | None = None) -> None:
        self.role = role
        self.stream = stream if stream is not None else sys.stderr
        if bars is None:
            bars = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bars = bars
        self._progress: Progress | None = None
        self._console: Console | None = None
        self._active: list[FileProgress] = []  # files started and not finished
        self._loader: threading.Thread | None = None  # loads rich off the event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._replay_at: float | None = None
        self._closed = False

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
        fp = FileProgress(self, name, total, start, task)
        self._active.append(fp)
        return fp

    def _moved(self) -> None:
        """A file moved (FileProgress.advance): on a terminal, have the bars
        shown if it goes on for BARS_AFTER."""
        if not self._bars or self._loader is not None or self._progress is not None or self._closed:
            return
        asyncio = sys.modules.get("asyncio")  # (a program on an event loop has it loaded)
        try:
            self._loop = asyncio.get_running_loop() if asyncio is not None else None
        except RuntimeError:
            self._loop = None
        if self._loop is None:  # not on an event loop: load here and now
            self._show()
            return
        self._loader = threading.Thread(target=self._load, name="gannet-progress", daemon=True)
        self._loop.call_later(self.BARS_AFTER, self._start_loading)

    def _start_loading(self) -> None:
        if not self._closed and self._loader is not None:
            self._loader.start()

    def _load(self) -> None:
        import rich.console  # noqa: F401 - (imported here, on this thread)
        import rich.progress  # noqa: F401

        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._show)
        except RuntimeError:  # the loop closed meanwhile: no bars
            pass

    def _show(self) -> None:
        """Build the bars (rich loaded) with a task for each active file."""
        if self._closed or self._progress is not None:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        self._console = Console(file=self.stream)
        progress = self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(),
            console=self._console, transient=True, get_time=self._clock,
        )
        progress.start()
        for fp in self._active:
            # As if the bar had been there from the file's start: its
            # advances so far are replayed at the times they happened.
            self._replay_at = fp.t0
            fp.task = progress.add_task(rich_safe(fp.name), total=fp.total, completed=fp.start_offset)
            for when, done in fp.history:
                self._replay_at = when
                progress.update(fp.task, completed=done)
            self._replay_at = None
            fp.history.clear()

    def _clock(self) -> float:
        """The bars' clock (time.monotonic, as rich's own), but the time of
        the advance being replayed while `_show` replays them."""
        return time.monotonic() if self._replay_at is None else self._replay_at

    def finish_file(self, fp: FileProgress, verdict: str) -> None:
        if fp.task is not None and self._progress is not None:
            self._progress.remove_task(fp.task)
            fp.task = None
        if fp in self._active:
            self._active.remove(fp)
        self.log(fp.summary(verdict))

    def close(self) -> None:
        self._closed = True
        if self._loader is not None and self._loader.is_alive():
            self._loader.join(5)  # (an import left running would race interpreter exit)
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
