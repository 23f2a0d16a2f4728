"""Start a gannet command and learn its port from its "listening on" line
(not a test module)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

GANNET = [sys.executable, "-m", "gannet"]


def as_foreground() -> None:
    """A child's SIGINT as an ordinary foreground program has it (Popen's
    preexec_fn): a suite started in the background by a non-interactive
    shell passes SIGINT down ignored, and Python then installs no
    KeyboardInterrupt handler, so a test's Ctrl-C would stop nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_listening(args: list[str], err: Path, env: dict | None = None,
                    wait: float = 15.0) -> tuple[subprocess.Popen, int]:
    """Run `gannet ARGS` with stderr into `err`; return the process and the
    port its "listening on HOST:PORT" line names (killed, and the log raised,
    if none comes within `wait` seconds)."""
    proc = subprocess.Popen(GANNET + args, stdout=subprocess.DEVNULL, stderr=err.open("wb"), env=env,
                            preexec_fn=as_foreground)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        m = re.search(r"listening on [\d.]+:(\d+)", err.read_text())
        if m:
            return proc, int(m.group(1))
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(err.read_text())
