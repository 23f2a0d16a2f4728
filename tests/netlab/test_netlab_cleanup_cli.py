"""Cleanup (normal, exception, signals, dead forwarder) and the CLI as a subprocess."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from programs import require
from netlab_support import skip_unless_netlab_possible

skip_unless_netlab_possible()

from gannet.netlab import Netlab  # noqa: E402
from gannet.netlab.state import STATE_ROOT, pid_alive  # noqa: E402

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]


def netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def wait_until(cond, timeout=8.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def assert_gone(namespaces, pids, sdir):
    assert wait_until(lambda: not (set(namespaces) & netns_list())), netns_list()
    assert wait_until(lambda: not any(pid_alive(p) for p in pids))
    assert not Path(sdir).exists()


def test_clean_exit_removes_everything():
    before = netns_list()
    with Netlab(seed=1) as lab:
        ns = list(lab.namespaces.values())
        assert set(ns) <= netns_list()
        assert all(n.startswith("gnl-") for n in ns)
        sleeper = lab.popen("b", ["sleep", "60"])
        fwd = lab.forwarder_pid
        sdir = lab.sdir
        assert pid_alive(fwd) and (sdir / "state.json").exists()
    assert_gone(ns, [fwd, sleeper.pid], sdir)
    # namespaces that were there before (not other labs', which may come and go) are untouched
    assert {n for n in before if not n.startswith("gnl-")} <= netns_list()


def test_exception_in_body_cleans_up():
    with pytest.raises(ZeroDivisionError):
        with Netlab(seed=1) as lab:
            ns, fwd, sdir = list(lab.namespaces.values()), lab.forwarder_pid, lab.sdir
            # a process started outside popen but inside the namespace dies too
            stray = subprocess.Popen(["ip", "netns", "exec", ns[0], "sleep", "60"])
            time.sleep(0.1)
            1 / 0
    assert_gone(ns, [fwd, stray.pid], sdir)
    stray.wait(timeout=5)


OWNER = r"""
import signal, sys, time
# A program started in the background by a non-interactive shell inherits
# SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the
# owner here is an ordinary foreground program, whatever ran the suite.
signal.signal(signal.SIGINT, signal.default_int_handler)
from gannet.netlab import Netlab
lab = Netlab(seed=1).start()
lab.popen("a", ["sleep", "60"])
print(lab.sdir, lab.forwarder_pid, *lab.namespaces.values(), flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_owner_killed_by_signal_cleans_up(sig):
    p = subprocess.Popen([PY, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        sdir, fwd, *ns = p.stdout.readline().split()
        assert set(ns) <= netns_list()
        p.send_signal(sig)
        p.wait(timeout=10)
        # SIGTERM/SIGINT: the owner's handler tears down; SIGKILL: the orphaned forwarder does
        assert_gone(ns, [int(fwd)], sdir)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=5)


def gannet(*args, timeout=30):
    return subprocess.run([PY, "-m", "gannet", "netlab", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def test_cli_up_exec_status_set_down():
    require("ping")
    name = f"t{os.getpid()}"
    r = gannet("up", "--name", name, "--delay", "20ms", "--loss", "0%", "--rate", "50mbit",
               "--queue", "64kb", "--seed", "3")
    try:
        assert r.returncode == 0, r.stderr
        lab = Netlab.attach(name)
        ns = list(lab.namespaces.values())
        fwd = lab.forwarder_pid
        b = lab.addr("b")
        r = gannet("exec", "--name", name, "a", "--", "ping", "-c", "2", "-i", "0.2", "-W", "2", b)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "time=4" in r.stdout  # 2 x 20 ms
        assert gannet("exec", "--name", name, "b", "--", "sh", "-c", "exit 7").returncode == 7
        r = gannet("status", "--name", name)
        assert r.returncode == 0 and "a->b: delay 20ms" in r.stdout, r.stdout + r.stderr
        assert "in 2 pkts" in r.stdout
        r = gannet("set", "--name", name, "--dir", "a->b", "--delay", "50ms", "loss=1%")
        assert r.returncode == 0, r.stderr
        assert lab.link("a->b").delay == pytest.approx(0.05) and lab.link("b->a").delay == 0.02
        assert gannet("set", "--name", name, "bogus=1").returncode == 1
        r = gannet("status", "--name", name, "--json")
        assert '"a->b"' in r.stdout
    finally:
        r = gannet("down", "--name", name)
    assert r.returncode == 0, r.stderr
    assert_gone(ns, [fwd], STATE_ROOT / name)


def test_cli_down_after_forwarder_died():
    name = f"d{os.getpid()}"
    assert gannet("up", "--name", name).returncode == 0
    lab = Netlab.attach(name)
    ns = list(lab.namespaces.values())
    os.kill(lab.forwarder_pid, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(lab.forwarder_pid))
    r = gannet("status", "--name", name)
    assert r.returncode == 1 and "down" in r.stderr
    r = gannet("down", "--name", name)
    assert r.returncode == 0, r.stderr
    assert_gone(ns, [], STATE_ROOT / name)
    assert gannet("down", "--name", name).returncode == 1  # nothing left to take down
