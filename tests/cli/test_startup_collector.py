"""Start-up and the cyclic garbage collector (gannet._startup): a command's
start-up runs no collection, and its loop's first wait ends the pause.

The checks that touch the collector run in fresh interpreters: pytest's
own collector settings are left alone.
"""

import gc
import json
import os
import socket
import subprocess
import sys

import pytest

from gannet import _startup
from gannet.cli import main as cli_main

# The real `gannet send`, as its process's own command line (runpy, as
# `python -m gannet` runs it), counting the collector's runs from the time
# the send command's module is imported (main is parsing its command line)
# to the first `sendto` (the SYN, to a UDP port the test holds), where the
# process ends before the datagram leaves.
_COUNT_TO_THE_SYN = (
    "import gc, os, runpy, sys\n"
    "runs = []\n"
    "def count(phase, info):\n"
    "    if phase == 'start' and 'gannet.cli.send' in sys.modules:\n"
    "        runs.append(info['generation'])\n"
    "gc.callbacks.append(count)\n"
    "def hook(event, args):\n"
    "    if event == 'socket.sendto':\n"
    "        sys.stderr.write(f'-- SYN: {len(runs)} collections, threshold {gc.get_threshold()[0]} --\\n')\n"
    "        sys.stderr.flush(); os._exit(0)\n"
    "sys.addaudithook(hook)\n"
    "sys.argv = ['gannet', *sys.argv[1:]]\n"
    "runpy.run_module('gannet', run_name='__main__', alter_sys=True)\n"
)


def test_a_sender_runs_no_collection_on_its_way_to_the_syn(tmp_path):
    sent = tmp_path / "file.bin"
    sent.write_bytes(b"x" * 1000)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_RUNTIME_DIR": str(tmp_path)}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        out = subprocess.run(
            [sys.executable, "-c", _COUNT_TO_THE_SYN, "send", str(sent),
             f"127.0.0.1:{peer.getsockname()[1]}", "--code", "7-guitar-october",
             "--connect-timeout", "5"],
            capture_output=True, text=True, timeout=60, env=env, check=False)  # (ends at its SYN)
    marker = [line for line in out.stderr.splitlines() if line.startswith("-- SYN:")]
    assert marker, out.stderr[-2000:]
    assert marker[0] == f"-- SYN: 0 collections, threshold {_startup.START_UP_THRESHOLD} --"


_FIRST_WAIT = """
import asyncio, gc, json
from gannet import _startup
from gannet.io.loops import run

before = gc.get_threshold()
_startup.pause()
seen = []

async def command():
    seen.append((gc.get_threshold(), gc.get_freeze_count()))
    await asyncio.sleep(0)  # the first wait
    seen.append((gc.get_threshold(), gc.get_freeze_count()))
    garbage = []
    garbage.append(garbage)  # a cycle made after start-up
    del garbage
    seen.append(gc.collect())

run(command())
print(json.dumps([before, seen]))
"""


def test_the_loop_ends_the_pause_when_the_command_first_waits():
    out = subprocess.run([sys.executable, "-c", _FIRST_WAIT], capture_output=True, text=True,
                         timeout=60, check=True)
    before, ((paused, frozen_paused), (after, frozen_after), collected) = json.loads(
        out.stdout.strip().splitlines()[-1])
    assert paused == [_startup.START_UP_THRESHOLD, *before[1:]] and frozen_paused == 0
    assert after == before
    assert frozen_after > 1000  # start-up's objects, out of later collections
    assert collected >= 1  # what is made from then on is collected as before


def test_a_command_that_runs_no_loop_ends_the_pause_itself(monkeypatch, tmp_path):
    """main() for the process's command line: a command that runs on no
    loop of Gannet's ends the pause as its work begins (an echo server
    runs for hours); one that stops at its parser, on its way out (without
    freezing). With an argv given (a caller's, not the process's) the
    collector is left alone."""
    calls = []
    monkeypatch.setattr(_startup, "pause", lambda: calls.append("pause"))
    monkeypatch.setattr(_startup, "resume", lambda freeze=True: calls.append(("resume", freeze)))
    with pytest.raises(SystemExit):
        cli_main.main(["--help"])
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["gannet", "--help"])
    with pytest.raises(SystemExit):
        cli_main.main()
    assert calls == ["pause", ("resume", False)]
    calls.clear()
    monkeypatch.setattr(sys, "argv", ["gannet", "--no-stats", "diagnose", str(tmp_path / "none")])
    assert cli_main.main() == 1  # (no such file)
    assert calls == ["pause", ("resume", True), ("resume", False)]
    assert "send" in cli_main._ON_THE_LOOP and set(cli_main._ON_THE_LOOP) <= set(cli_main.COMMANDS)


def test_pause_and_resume_restore_the_thresholds():
    # (a second pause changes nothing, nor does a second resume)
    probe = ("import gc, json\n"
             "from gannet import _startup\n"
             "gc.set_threshold(500, 7, 9)\n"
             "_startup.pause(); _startup.pause()\n"
             "paused = gc.get_threshold()\n"
             "_startup.resume(freeze=False); _startup.resume()\n"
             "print(json.dumps([paused, gc.get_threshold(), gc.get_freeze_count()]))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                         check=True)
    paused, after, frozen = json.loads(out.stdout.strip().splitlines()[-1])
    assert paused == [_startup.START_UP_THRESHOLD, 7, 9]
    assert after == [500, 7, 9] and frozen == 0
    assert gc.isenabled()  # (this process's collector untouched)
