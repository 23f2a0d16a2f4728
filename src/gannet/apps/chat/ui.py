"""The chat's line-oriented terminal front end.

Interactive (stdin and stdout are terminals): the terminal is put in
cbreak mode and the input line is edited here, so incoming messages and
system lines are printed *above* a bottom area holding the live transfer
progress bars (rich: bar, size, rate, ETA) and the prompt with what has
been typed so far. Otherwise (pipes, files): input is read line by line,
messages go to stdout and system lines to stderr, no live display.

All terminal output happens on the event loop thread; a daemon thread only
reads raw bytes from stdin with os.read and hands them to the loop.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import os
import sys
import threading
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from ..display import rich_safe, safe_text
from ..limits import ChatLimits
from .session import (
    Event, Info, Message, PeerConnected, PeerDisconnected, TransferFailed, TransferFinished,
    TransferStarted,
)
from .transfer import Transfer

REDRAW_INTERVAL = ChatLimits.redraw_interval
MAX_BARS = ChatLimits.max_bars


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def describe(ev: Event, peer: str) -> tuple[Text, bool]:
    """The line shown for an event, and whether it is chat data (True) or a system line.

    Every line but our own help text holds something the peer chose (its
    name, its words, file names, reasons): it is shown through `safe_text`,
    one line of inert text whatever the peer put in it."""
    if isinstance(ev, Message):
        line = Text(f"[{ev.time:%H:%M:%S}] ", style="dim")
        line.append(safe_text(ev.name), style="bold cyan" if ev.own else "bold magenta")
        line.append(": ")
        line.append(safe_text(ev.text))
        return line, True
    if isinstance(ev, Info) and ev.kind == "help":
        return Text(ev.text), False
    (text, style), is_data = _describe_system(ev, peer)
    return Text(safe_text(text), style=style), is_data


def _describe_system(ev: Event, peer: str) -> tuple[tuple[str, str], bool]:
    """A system line as (text, style), before escaping (rich.Text would strip
    some control characters first and hide what the peer sent)."""
    if isinstance(ev, Info):
        style = {"error": "red", "connecting": "yellow"}.get(ev.kind, "dim")
        return _line(f"* {ev.text}", style=style), False
    if isinstance(ev, PeerConnected):
        return _line(f"* peer connected: {ev.name} ({ev.address}); type help for commands",
                    style="bold green"), False
    if isinstance(ev, PeerDisconnected):
        if ev.how == "clean":
            return _line(f"* peer disconnected: {ev.name} left", style="bold yellow"), False
        if ev.how == "unreachable":
            detail = ev.detail.removeprefix("peer unreachable: ")
            return _line(f"* peer unreachable: {ev.name} stopped answering ({detail})",
                        style="bold red"), False
        return _line(f"* connection to {ev.name} lost: {ev.detail}", style="bold red"), False
    if isinstance(ev, TransferStarted):
        t = ev.transfer
        what = f"sending {t.name} ({human_size(t.size)}) to {peer}" if t.direction == "out" \
            else f"receiving {t.name} ({human_size(t.size)}) from {peer}"
        return _line(f"* transfer started: {what}", style="blue"), False
    if isinstance(ev, TransferFinished):
        t = ev.transfer
        secs = max(t.elapsed, 1e-6)
        rate = f"{human_size(int(t.size / secs))}/s"
        if t.direction == "out":
            msg = (f"* transfer finished: sent {t.name} ({human_size(t.size)}, {t.elapsed:.1f} s, "
                   f"{rate}); {peer} verified its SHA-256")
        else:
            msg = (f"* transfer finished: received {t.name} ({human_size(t.size)}, {t.elapsed:.1f} s, "
                   f"{rate}) -> {t.path}; SHA-256 {t.sha256[:16]} verified")
        return _line(msg, style="bold blue"), False
    if isinstance(ev, TransferFailed):
        return _line(f"* transfer failed: {ev.transfer.name}: {ev.reason}", style="bold red"), False
    return _line(f"* {ev}"), False


def _line(text: str, style: str = "") -> tuple[str, str]:
    return text, style


class TerminalUI:
    """Renders chat events; feeds typed lines to `on_line`, end of input to `on_eof`."""

    def __init__(self, on_line: Callable[[str], None], on_eof: Callable[[], None],
                 *, stdin_fd: int | None = None, stdout=None, stderr=None,
                 interactive: bool | None = None, prompt: str = "> ") -> None:
        self.on_line = on_line
        self.on_eof = on_eof
        self.stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
        self.out = stdout or sys.stdout
        self.err = stderr or sys.stderr
        if interactive is None:
            interactive = os.isatty(self.stdin_fd) and self.out.isatty()
        self.interactive = interactive
        self.prompt = prompt
        self.console = Console(file=self.out, highlight=False, soft_wrap=True)
        self.err_console = Console(file=self.err, highlight=False, soft_wrap=True)
        self.peer = "peer"
        self.buffer = ""
        self._rows = 0  # rows the bottom area occupies now
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._escape = ""  # an escape sequence being skipped
        self._pending_line = ""  # non-interactive: partial line
        self._saved_tty: list | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._redraw: asyncio.TimerHandle | None = None
        self._tasks: dict[Transfer, TaskID] = {}
        self._bars_text: str | None = None  # the last rendering of the bars (see _bars)
        self._bars_at = 0.0
        self._bars_width = 0
        self._bar_out = io.StringIO()
        self._bar_console = Console(file=self._bar_out, force_terminal=True, highlight=False,
                                    color_system=self.console.color_system or None)  # type: ignore[arg-type]
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=30),
            TextColumn("{task.percentage:>5.1f}%"), DownloadColumn(), TransferSpeedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=self._bar_console, auto_refresh=False,
        )
        self.closed = False

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.interactive:
            import termios
            import tty

            try:
                self._saved_tty = termios.tcgetattr(self.stdin_fd)
                tty.setcbreak(self.stdin_fd)
            except termios.error:
                self._saved_tty = None
            self._draw()
        threading.Thread(target=self._pump, name="gannet-chat-stdin", daemon=True).start()
        self._schedule_redraw()

    def stop(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._redraw is not None:
            self._redraw.cancel()
        if self.interactive:
            self._write(self._clear_seq())
            self._rows = 0
            if self._saved_tty is not None:
                import termios

                try:
                    termios.tcsetattr(self.stdin_fd, termios.TCSADRAIN, self._saved_tty)
                except termios.error:
                    pass
        self.out.flush()

    def _pump(self) -> None:
        """Thread: raw stdin bytes to the loop (os.read, so exit never blocks on it)."""
        loop = self._loop
        assert loop is not None
        try:
            while True:
                data = os.read(self.stdin_fd, 4096)
                loop.call_soon_threadsafe(self._on_input, data)
                if not data:
                    return
        except (OSError, RuntimeError):
            try:
                loop.call_soon_threadsafe(self._on_input, b"")
            except RuntimeError:
                pass

    # ---------------------------------------------------------------- input
    def _on_input(self, data: bytes) -> None:
        if self.closed:
            return
        if not data:
            if not self.interactive and self._pending_line:
                line, self._pending_line = self._pending_line, ""
                self.on_line(line)
            self.on_eof()
            return
        text = self._decoder.decode(data)
        if not self.interactive:
            self._pending_line += text
            while "\n" in self._pending_line:
                line, self._pending_line = self._pending_line.split("\n", 1)
                self.on_line(line.rstrip("\r"))
            return
        changed = False
        for ch in text:
            if self._escape:
                self._escape += ch
                # CSI ends at a byte in @..~; ESC O x is three characters.
                if (len(self._escape) > 2 and ("@" <= ch <= "~")) or \
                        (self._escape.startswith("\x1bO") and len(self._escape) == 3) or \
                        (len(self._escape) == 2 and ch not in "[O"):
                    self._escape = ""
                continue
            if ch == "\x1b":
                self._escape = ch
            elif ch in "\r\n":
                line, self.buffer = self.buffer, ""
                self._submit(line)
                changed = True
            elif ch in "\x7f\x08":
                self.buffer = self.buffer[:-1]
                changed = True
            elif ch == "\x15":  # Ctrl-U
                self.buffer = ""
                changed = True
            elif ch == "\x17":  # Ctrl-W
                self.buffer = self.buffer.rstrip()
                self.buffer = self.buffer[: self.buffer.rfind(" ") + 1]
                changed = True
            elif ch == "\x04":  # Ctrl-D
                if not self.buffer:
                    self.on_eof()
            elif ch == "\t":
                self.buffer += " "
                changed = True
            elif ch >= " ":
                self.buffer += ch
                changed = True
        if changed and not self.closed:
            self._refresh()

    def _submit(self, line: str) -> None:
        stripped = line.strip()
        if stripped and (stripped.startswith("/") and not stripped.startswith("//")
                         or stripped == "help"):
            self.show(Text(f"{self.prompt}{line}", style="dim"))
        self.on_line(line)

    # --------------------------------------------------------------- output
    def event(self, ev: Event) -> None:
        if isinstance(ev, PeerConnected):
            self.peer = ev.name
        if isinstance(ev, TransferStarted) and self.interactive:
            t = ev.transfer
            arrow = "send" if t.direction == "out" else "recv"
            # The description is rich markup: the peer's file name is escaped for both.
            self._tasks[t] = self.progress.add_task(f"{arrow} {rich_safe(t.name[:24])}",
                                                    total=t.size or 1, completed=0 if t.size else 1)
            self._bars_text = None
        if isinstance(ev, (TransferFinished, TransferFailed)):
            task = self._tasks.pop(ev.transfer, None)
            if task is not None:
                self.progress.remove_task(task)
                self._bars_text = None
        line, is_data = describe(ev, self.peer)
        self.show(line, data=is_data)

    def show(self, line: Text, data: bool = True) -> None:
        if self.closed:
            return
        if not self.interactive:
            (self.console if data else self.err_console).print(line)
            return
        self._write(self._clear_seq())
        self._rows = 0
        self.console.print(line)
        self._draw()

    def _write(self, s: str) -> None:
        if s:
            self.out.write(s)
            self.out.flush()

    def _clear_seq(self) -> str:
        if not self._rows:
            return ""
        up = f"\x1b[{self._rows - 1}A" if self._rows > 1 else ""
        return f"\r{up}\x1b[J"

    def _width(self) -> int:
        try:  # the terminal itself (COLUMNS in the environment may be stale)
            return os.get_terminal_size(self.out.fileno()).columns
        except (OSError, ValueError, AttributeError):
            return self.console.width

    def _status(self) -> tuple[str, int]:
        width = max(20, self._width())
        parts, rows = [], 0
        if self._tasks:
            bars = self._bars(width)
            parts.append(bars.replace("\n", "\r\n"))
            rows += bars.count("\n")
        prompt = f"{self.prompt}{self.buffer}"
        parts.append(prompt)
        rows += max(1, -(-Text(prompt).cell_len // width))
        return "".join(parts), rows

    def _bars(self, width: int) -> str:
        """The progress bars, rendered at most once per REDRAW_INTERVAL (lines
        and keys in between reuse the last rendering), at most MAX_BARS of them."""
        now = time.monotonic()
        if (self._bars_text is not None and now - self._bars_at < REDRAW_INTERVAL
                and self._bars_width == width):
            return self._bars_text
        for i, (t, task) in enumerate(self._tasks.items()):
            self.progress.update(task, completed=t.done if t.size else 1, visible=i < MAX_BARS)
        self._bar_out.seek(0)
        self._bar_out.truncate()
        self._bar_console.width = width - 1
        self._bar_console.print(self.progress.get_renderable())
        hidden = len(self._tasks) - MAX_BARS
        if hidden > 0:
            self._bar_console.print(f"+{hidden} more transfer(s)", markup=False)
        self._bars_text, self._bars_at, self._bars_width = self._bar_out.getvalue(), now, width
        return self._bars_text

    def _draw(self) -> None:
        text, rows = self._status()
        self._write(text)
        self._rows = rows

    def _refresh(self) -> None:
        clear = self._clear_seq()
        text, rows = self._status()
        self._write(clear + text)
        self._rows = rows

    def _schedule_redraw(self) -> None:
        if self.closed or self._loop is None:
            return
        if self.interactive and self._tasks:
            self._refresh()
        self._redraw = self._loop.call_later(REDRAW_INTERVAL, self._schedule_redraw)
