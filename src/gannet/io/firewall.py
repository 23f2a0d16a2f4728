"""Keep the kernel from resetting connections Gannet's raw-socket TCP owns.

The kernel sees every TCP segment that reaches the host, including those for
a port Gannet serves from user space. It has no socket in a state to take
them, so it answers each with RST (RFC 9293 3.10.7.1), which would tear down
the very connection Gannet is running. `RstGuard` installs one firewall rule
per Gannet port that drops those RSTs: output, TCP, source port the Gannet
port, RST set, and not carrying Gannet's packet mark (the raw socket marks
its own packets with SO_MARK, so Gannet's own RSTs still leave).

The rule is tagged with a comment naming the owner's process ID. It is
removed on exit (close, atexit, SIGTERM); a process killed outright leaves it
behind, and the next guard installed on this host (network namespace)
removes every Gannet rule whose owner is no longer alive. iptables is used
where present, else nft; `sweep()` does the clean-up alone.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import threading

from gannet.procs import pid_alive

MARK = 0x474E5401  # "GNT" 1: the SO_MARK of Gannet's raw-socket packets
COMMENT = "gannet-tcp pid={pid} port={port}"
_COMMENT_RE = re.compile(r"gannet-tcp pid=(\d+) port=(\d+)")
NFT_TABLE = "gannet"


class FirewallError(OSError):
    """The rule could not be installed; the message says what is needed."""


def backend() -> str | None:
    """'iptables', 'nft', or None when neither program is there."""
    if shutil.which("iptables"):
        return "iptables"
    if shutil.which("nft"):
        return "nft"
    return None


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise FirewallError(f"{' '.join(args)} failed: {proc.stderr.strip() or proc.returncode}")
    return proc



def _iptables_spec(port: int, comment: str) -> list[str]:
    return ["OUTPUT", "-p", "tcp", "--sport", str(port), "--tcp-flags", "RST", "RST",
            "-m", "mark", "!", "--mark", hex(MARK), "-m", "comment", "--comment", comment,
            "-j", "DROP"]


def rules() -> list[tuple[int, int, str]]:
    """Gannet's rules on this host: (owner pid, port, how to delete it)."""
    found = []
    kind = backend()
    if kind == "iptables":
        out = _run(["iptables", "-w", "-S", "OUTPUT"], check=False).stdout
        for line in out.splitlines():
            m = _COMMENT_RE.search(line)
            if m and line.startswith("-A OUTPUT"):
                found.append((int(m.group(1)), int(m.group(2)), m.group(0)))
    elif kind == "nft":
        out = _run(["nft", "-a", "list", "chain", "ip", NFT_TABLE, "output"], check=False).stdout
        for line in out.splitlines():
            m = _COMMENT_RE.search(line)
            h = re.search(r"# handle (\d+)", line)
            if m and h:
                found.append((int(m.group(1)), int(m.group(2)), h.group(1)))
    return found


def _delete(port: int, ref: str) -> None:
    if backend() == "iptables":
        _run(["iptables", "-w", "-D"] + _iptables_spec(port, ref), check=False)
    else:
        _run(["nft", "delete", "rule", "ip", NFT_TABLE, "output", "handle", ref], check=False)


def sweep() -> int:
    """Remove the rules of Gannet processes that are gone; how many."""
    removed = 0
    for pid, port, ref in rules():
        if not pid_alive(pid):
            _delete(port, ref)
            removed += 1
    return removed


class RstGuard:
    """The rule for one port, owned by this process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.comment = COMMENT.format(pid=os.getpid(), port=port)
        self.installed = False
        self._lock = threading.Lock()

    def install(self) -> None:
        kind = backend()
        if kind is None:
            raise FirewallError("Gannet's raw-socket TCP needs iptables or nft, to keep the "
                                "kernel from resetting its connections")
        sweep()
        if kind == "iptables":
            _run(["iptables", "-w", "-I"] + _iptables_spec(self.port, self.comment))
        else:
            _run(["nft", "add", "table", "ip", NFT_TABLE])
            _run(["nft", "add", "chain", "ip", NFT_TABLE, "output",
                  "{ type filter hook output priority 0 ; }"])
            _run(["nft", "add", "rule", "ip", NFT_TABLE, "output", "tcp", "sport", str(self.port),
                  "tcp", "flags", "&", "rst", "==", "rst", "meta", "mark", "!=", hex(MARK),
                  "drop", "comment", f'"{self.comment}"'])
        self.installed = True
        _register(self)

    def remove(self) -> None:
        with self._lock:
            if not self.installed:
                return
            self.installed = False
        _unregister(self)
        for pid, port, ref in rules():
            if pid == os.getpid() and port == self.port:
                _delete(port, ref)
                break


# Every guard this process holds, removed at exit and on SIGTERM.
_guards: set[RstGuard] = set()
_hooked = False


def _register(guard: RstGuard) -> None:
    global _hooked
    _guards.add(guard)
    if not _hooked:
        _hooked = True
        atexit.register(_remove_all)
    hook_sigterm()


def hook_sigterm() -> None:
    """Make SIGTERM exit through atexit (removing the rules) instead of
    killing the process outright, unless the program handles SIGTERM
    itself. Only the main thread can set a handler: a guard installed on
    another thread (the blocking Socket's loop thread) is covered by the
    call its API makes on the caller's thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        pass


def _unregister(guard: RstGuard) -> None:
    _guards.discard(guard)


def _remove_all() -> None:
    for guard in list(_guards):
        guard.remove()


def _on_sigterm(signum: int, frame: object) -> None:
    _remove_all()
    raise SystemExit(128 + signum)
