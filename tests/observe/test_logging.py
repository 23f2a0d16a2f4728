"""Library code reports through logging (logger "gannet" and children) and
prints nothing; the application decides what is shown."""

import ast
import logging
import os
import pathlib
import subprocess
import sys

import gannet
from gannet.observe import control

SRC = pathlib.Path(gannet.__file__).parent
# Modules whose job is to write to a terminal stream they are given (the chat
# screen, the transfer progress reporter), and the netlab forwarder's main,
# whose "ready" line on stdout is its protocol with the parent process.
WRITERS = {"apps/chat/ui.py", "apps/transfer/progress.py", "netlab/forwarder.py"}


def _calls(tree, name):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name:
            yield node


def test_no_prints_in_library_code():
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("cli/") or rel in WRITERS or rel == "__main__.py":
            continue
        tree = ast.parse(path.read_text())
        offenders += [f"{rel}:{c.lineno}" for c in _calls(tree, "print")]
    assert not offenders, offenders


def test_every_logger_is_under_gannet():
    names = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "getLogger" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                names.append(node.args[0].value)
    assert names and all(n == "gannet" or n.startswith("gannet.") for n in names), names


def test_a_library_warning_goes_to_logging_not_stderr(tmp_path, caplog):
    bad = tmp_path / "shared"
    bad.mkdir()
    os.chmod(bad, 0o777)  # others may enter: the stats socket refuses it
    with caplog.at_level(logging.WARNING, logger="gannet"):
        assert control.start_server(str(bad)) is None
    assert any(r.name == "gannet.observe.control" and "not private" in r.getMessage()
               for r in caplog.records)
    # an application that configured no logging sees nothing on stderr
    code = ("import os, gannet; from gannet.observe import control; "
            f"assert control.start_server({str(bad)!r}) is None")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_the_commands_show_library_warnings(tmp_path):
    shared = tmp_path / "gannet"
    shared.mkdir()
    os.chmod(shared, 0o777)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("GANNET_NO_STATS", None)
    out = subprocess.run([sys.executable, "-m", "gannet", "demo", "--size", "10kb"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert "not private" in out.stderr
