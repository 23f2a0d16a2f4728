"""What every `gannet` command promises: `--help` works everywhere, a usage
error is one line with a non-zero exit, `--debug` shows the traceback that is
otherwise folded into one line. Run as subprocesses, as a person would."""

import argparse
import os
import socket
import subprocess
import sys

import pytest

from gannet.cli.main import build_parser

GANNET = [sys.executable, "-m", "gannet"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """Every command path the parser knows: (), ('chat',), ('tunnel', 'server'), ..."""
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, prefix + (name,))


COMMANDS = list(_commands(build_parser()))


def gannet(*args, timeout=30):
    return subprocess.run(GANNET + list(args), capture_output=True, text=True, timeout=timeout,
                          env=ENV, stdin=subprocess.DEVNULL)


def test_the_issue_commands_are_all_there():
    names = {" ".join(c) for c in COMMANDS}
    for cmd in ("chat", "send", "receive", "server", "client", "echo-server", "echo",
                "tunnel server", "tunnel client", "demo"):
        assert cmd in names, f"`gannet {cmd}` is missing"


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "gannet")
def test_help_everywhere(cmd):
    out = gannet(*cmd, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: {' '.join(('gannet',) + cmd)}"), out.stdout[:200]
    assert out.stderr == ""


@pytest.mark.parametrize("args", [
    ["chat", "--listen", "0", "--peer", "127.0.0.1:9"],
    ["chat", "--listen", "9000"],
    ["send"],
    ["receive", "--dir", "x"],
    ["server", "--port", "many"],
    ["client", "--operation-mode", "sometimes"],
    ["echo"],
    ["echo-server", "--no-such-option"],
    ["tunnel"],
    ["tunnel", "server", "--listen", ":0"],
    ["no-such-command"],
])
def test_usage_errors_are_one_line(args):
    out = gannet(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("gannet") and "--help" in lines[0]


def _closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_debug_shows_the_traceback():
    port = _closed_udp_port()
    plain = gannet("echo", f"127.0.0.1:{port}", "--message", "hi")
    assert plain.returncode == 1
    assert plain.stderr.splitlines() == [plain.stderr.strip()] and "refused" in plain.stderr
    assert "Traceback" not in plain.stderr
    debug = gannet("--debug", "echo", f"127.0.0.1:{port}", "--message", "hi")
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "ConnectionRefusedError" in debug.stderr
    after = gannet("echo", "--debug", f"127.0.0.1:{port}", "--message", "hi")
    assert after.returncode != 0 and "Traceback (most recent call last)" in after.stderr


@pytest.mark.parametrize("args", [
    ["echo", "no-such-host.invalid:7"],
    ["send", __file__, "no-such-host.invalid:7"],
    ["chat", "--listen", "0", "--peer", "no-such-host.invalid:7"],
])
def test_unresolvable_host_is_one_line(args):
    if args[0] == "chat":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            args = ["chat", "--listen", str(s.getsockname()[1]), "--peer", args[-1]]
    out = gannet(*args)
    assert out.returncode == 1, out
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert "cannot resolve 'no-such-host.invalid'" in out.stderr
