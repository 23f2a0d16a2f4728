"""On-disk state of running labs and the teardown that only removes what a lab recorded.

Each lab has a directory STATE_ROOT/<name>/ holding:

    state.json     what the lab created: namespaces, TUN names, forwarder pid
    config.json    what the forwarder was started with
    control.sock   the forwarder's control socket (JSON lines)
    forwarder.log  the forwarder's stderr

The namespaces are always named NS_PREFIX + id + '-' + node ('gnl-1a2b3c-a');
teardown refuses to delete a namespace without that prefix, and it signals
only the recorded forwarder pid (after checking its command line) and
processes living inside the lab's own namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from gannet.procs import pid_alive

STATE_ROOT = Path(os.environ.get("GANNET_NETLAB_STATE", "/run/gannet-netlab"))
NS_PREFIX = "gnl-"
FORWARDER_MODULE = "gannet.netlab.forwarder"


def state_dir(name: str) -> Path:
    return STATE_ROOT / name


def read_state(sdir: Path) -> dict | None:
    try:
        return json.loads((sdir / "state.json").read_text())
    except (OSError, ValueError):
        return None


def write_state(sdir: Path, state: dict) -> None:
    sdir.mkdir(parents=True, exist_ok=True)
    tmp = sdir / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, sdir / "state.json")


def list_labs() -> list[str]:
    if not STATE_ROOT.is_dir():
        return []
    return sorted(p.name for p in STATE_ROOT.iterdir() if (p / "state.json").exists())


def ip(*args: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def netns_exists(ns: str) -> bool:
    return os.path.exists(f"/run/netns/{ns}")


def netns_pids(ns: str) -> list[int]:
    if not netns_exists(ns):
        return []
    proc = ip("netns", "pids", ns, check=False)
    return [int(x) for x in proc.stdout.split() if x.strip().isdigit()]



def is_our_forwarder(pid: int, sdir: Path) -> bool:
    """True if `pid` is a netlab forwarder started for this state directory."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return FORWARDER_MODULE.encode() in argv and str(sdir).encode() in argv


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def kill_pids(pids: list[int], grace: float = 1.0) -> None:
    me = os.getpid()
    pids = [p for p in pids if p != me]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        pids = _wait_gone(pids, grace)
        if not pids:
            return


def stop_forwarder(sdir: Path, state: dict, grace: float = 2.0) -> None:
    pid = state.get("forwarder_pid")
    if not pid or pid == os.getpid() or not is_our_forwarder(pid, sdir):
        return
    try:
        from .control import request
        request(sdir, {"op": "stop"}, timeout=1.0)
    except Exception:
        pass
    if _wait_gone([pid], grace):
        kill_pids([pid], grace=1.0)


def teardown(sdir: Path, *, stop_fwd: bool = True) -> list[str]:
    """Remove everything the lab in `sdir` recorded. Safe to call twice, or after a crash.

    Returns a list of human-readable actions taken.
    """
    done: list[str] = []
    state = read_state(sdir)
    if state is None:
        if sdir.is_dir() and sdir.parent == STATE_ROOT:
            shutil.rmtree(sdir, ignore_errors=True)
        return done
    if stop_fwd:
        stop_forwarder(sdir, state)
        done.append("stopped forwarder")
    namespaces = [ns for ns in state.get("namespaces", []) if ns.startswith(NS_PREFIX)]
    pids: list[int] = []
    for ns in namespaces:
        pids += netns_pids(ns)
    if pids:
        kill_pids(pids)
        done.append(f"killed {len(pids)} process(es) in the lab's namespaces")
    for ns in namespaces:
        if netns_exists(ns):
            ip("netns", "del", ns, check=False)
            done.append(f"deleted netns {ns}")
    shutil.rmtree(sdir, ignore_errors=True)
    return done
