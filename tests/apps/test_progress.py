"""The transfer's progress reporter: rich bars on a terminal, loaded only
once a file has moved for a while (start-up: loading rich costs more than
the whole handshake), and the same lines either way."""

import io
import subprocess
import sys

PROBE = r"""
import asyncio, io, sys
from gannet.apps.transfer.progress import Reporter

class Terminal(io.StringIO):
    def isatty(self):
        return True

async def main(seconds):
    rep = Reporter("send", Terminal())
    rep.log("connected")
    fp = rep.start_file("a.bin", 10_000)
    fp.advance(1000)
    await asyncio.sleep(0.02)
    fp.advance(1000)
    before = "rich" in sys.modules
    await asyncio.sleep(seconds)
    shown = rep._progress is not None
    # the bar knows the rate at once: the advances before it were replayed
    task = fp.task is not None and rep._progress.tasks[0].speed > 0
    fp.advance(8000)
    rep.finish_file(fp, "sent")
    rep.close()
    print(before, shown, task, "rich" in sys.modules)

asyncio.run(main(float(sys.argv[1])))
"""


def run_probe(seconds: float) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(seconds)], capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.split()


def test_bars_come_after_the_file_has_moved_for_a_while():
    # rich is not loaded when the first bytes move; after a few seconds the
    # bar is there, with a task for the file already running at its rate
    assert run_probe(3.0) == ["False", "True", "True", "True"]


def test_a_short_transfer_never_loads_rich():
    assert run_probe(0.0) == ["False", "False", "False", "False"]


def test_the_lines_are_the_same_with_and_without_bars():
    import re

    from gannet.apps.transfer.progress import Reporter

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    outputs = []
    for stream in (io.StringIO(), Terminal()):
        rep = Reporter("send", stream)
        rep.log("connected to x")
        fp = rep.start_file("a.bin", 5)
        fp.advance(5)  # (no event loop here: on a terminal the bars are built now)
        assert (rep._progress is not None) == isinstance(stream, Terminal)
        rep.finish_file(fp, "sent (none)")
        rep.close()
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())
        outputs.append([re.sub(r" in [\d.]+ s \([^)]*\)", "", line)
                        for line in text.splitlines() if line.startswith("gannet send: ")])
    assert outputs[0] == outputs[1] == ["gannet send: connected to x",
                                        "gannet send: a.bin: 5 B, 5 B - sent (none)"]
