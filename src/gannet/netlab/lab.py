"""Netlab: two network namespaces joined by a user-space emulated link.

    with Netlab(a_to_b=LinkConfig(delay=0.02), b_to_a=LinkConfig(delay=0.02), seed=1) as lab:
        lab.run("a", ["ping", "-c", "1", lab.addr("b")])
        lab.set_link("a->b", loss=1.0)

See docs/netlab.md for the whole API.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from .config import DIRECTIONS, LinkConfig, expand_direction, normalize_changes
from .control import request
from .state import (FORWARDER_MODULE, NS_PREFIX, ip, read_state, state_dir, teardown,
                    write_state, pid_alive)

NODES = ("a", "b")
_live: "set[Netlab]" = set()
_live_lock = threading.Lock()


class NetlabError(RuntimeError):
    """Setting up or talking to a lab failed."""


def _check_node(node: str) -> str:
    if node not in NODES:
        raise ValueError(f"unknown node {node!r} (use 'a' or 'b')")
    return node


def _as_link(cfg: LinkConfig | dict | None) -> LinkConfig:
    if cfg is None:
        return LinkConfig()
    if isinstance(cfg, LinkConfig):
        return cfg
    return LinkConfig().replace(**cfg)


class Netlab:
    """Two namespaces 'a' and 'b', one TUN device each, joined by the forwarder.

    a_to_b, b_to_a   LinkConfig (or a dict of changes, unit strings allowed)
    link             sets both directions at once (a_to_b / b_to_a override it)
    seed             seeds every random decision of the link
    name             state directory name under /run/gannet-netlab (default lab-<id>)
    mtu              MTU of the TUN devices (LinkConfig.mtu drops in the link)
    schedule         [(t_offset_seconds, 'a->b'|'b->a'|'both', {changes}), ...],
                     offsets from the moment the link comes up
    daemon           True: the forwarder outlives this process (the CLI's `up`);
                     False: the forwarder tears the lab down if this process dies
    """

    def __init__(self, a_to_b: LinkConfig | dict | None = None,
                 b_to_a: LinkConfig | dict | None = None, *,
                 link: LinkConfig | dict | None = None, seed: int = 0,
                 name: str | None = None, mtu: int = 1500,
                 schedule: Iterable[tuple[float, str, dict]] = (),
                 daemon: bool = False, setup_timeout: float = 15.0):
        base = _as_link(link)
        self.links = {"a->b": _as_link(a_to_b) if a_to_b is not None else base,
                      "b->a": _as_link(b_to_a) if b_to_a is not None else base}
        self.seed = seed
        self.id = secrets.token_hex(3)
        self.name = name or f"lab-{self.id}"
        if not self.name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"bad lab name {self.name!r}")
        self.mtu = mtu
        self.schedule_entries = [(float(t), d, dict(c)) for t, d, c in schedule]
        for _, d, c in self.schedule_entries:
            expand_direction(d)
            normalize_changes(c)
        self.daemon = daemon
        self.setup_timeout = setup_timeout
        self.sdir = state_dir(self.name)
        self.namespaces = {n: f"{NS_PREFIX}{self.id}-{n}" for n in NODES}
        self.tuns = {n: f"gnl{self.id}{n}" for n in NODES}
        octet = int(self.id[:2], 16) % 254 + 1
        self.addrs = {"a": f"10.77.{octet}.1", "b": f"10.77.{octet}.2"}
        self.prefixlen = 24
        self._owner = True
        self._started = False
        self._proc: subprocess.Popen | None = None
        self._children: list[subprocess.Popen] = []
        self._old_sigterm: Any = None
        self._kernel_base: dict[str, dict[str, int]] = {}

    # -- attach to a lab started elsewhere (the CLI) --------------------------

    @classmethod
    def attach(cls, name: str) -> "Netlab":
        """A handle on a running lab by name; stop() on it tears the lab down."""
        sdir = state_dir(name)
        st = read_state(sdir)
        if st is None:
            raise NetlabError(f"no netlab named {name!r}")
        lab = cls.__new__(cls)
        lab.name, lab.sdir, lab.id = name, sdir, st["id"]
        lab.namespaces = dict(zip(NODES, st["namespaces"]))
        lab.tuns = st["tuns"]
        lab.addrs = st["addrs"]
        lab.prefixlen = st.get("prefixlen", 24)
        lab.seed = st.get("seed", 0)
        lab.mtu = st.get("mtu", 1500)
        lab.links = {}
        lab.schedule_entries = []
        lab.daemon = True
        lab._owner = False
        lab._started = True
        lab._proc = None
        lab._children = []
        lab._old_sigterm = None
        lab._kernel_base = st.get("kernel_base", {})
        return lab

    # -- lifecycle ----------------------------------------------------------

    def __enter__(self) -> "Netlab":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Netlab":
        if self._started:
            return self
        if os.geteuid() != 0:
            raise NetlabError("netlab needs root (network namespaces and /dev/net/tun)")
        if read_state(self.sdir) is not None:
            raise NetlabError(f"a netlab named {self.name!r} already exists "
                              f"(gannet netlab down --name {self.name})")
        self._started = True
        with _live_lock:
            _live.add(self)
        self._install_signal_handler()
        try:
            self._setup()
        except BaseException:
            self.stop()
            raise
        return self

    def _state(self) -> dict:
        return {"id": self.id, "name": self.name, "namespaces": [self.namespaces[n] for n in NODES],
                "tuns": self.tuns, "addrs": self.addrs, "prefixlen": self.prefixlen,
                "seed": self.seed, "mtu": self.mtu, "daemon": self.daemon,
                "forwarder_pid": self._proc.pid if self._proc else None,
                "owner_pid": os.getpid(), "created": time.time(),
                "kernel_base": self._kernel_base}

    def _setup(self) -> None:
        # record first, then create: teardown removes only what is recorded
        write_state(self.sdir, self._state())
        for n in NODES:
            ns = self.namespaces[n]
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "dev", "lo", "up")
            # no IPv6 on the lab's links: no router solicitations or MLD crossing the link
            subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
                            "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"],
                           capture_output=True, timeout=10)
        config = {"seed": self.seed, "tuns": self.tuns, "namespaces": self.namespaces,
                  "links": {d: self.links[d].to_dict() for d in DIRECTIONS},
                  "schedule": self.schedule_entries,
                  "parent_pid": None if self.daemon else os.getpid(),
                  "cleanup_on_orphan": not self.daemon}
        (self.sdir / "config.json").write_text(json.dumps(config, indent=1))
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log = open(self.sdir / "forwarder.log", "ab")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", FORWARDER_MODULE, str(self.sdir)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env,
                start_new_session=True, close_fds=True)
        finally:
            log.close()
        write_state(self.sdir, self._state())
        self._wait_ready()
        for n in NODES:
            ns, dev = self.namespaces[n], self.tuns[n]
            ip("-n", ns, "link", "set", "dev", dev, "mtu", str(self.mtu), "txqueuelen", "1000", "up")
            ip("-n", ns, "addr", "add", f"{self.addrs[n]}/{self.prefixlen}", "dev", dev)
        self._kernel_base = self._kernel_counters()
        write_state(self.sdir, self._state())

    def _wait_ready(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + self.setup_timeout
        out = self._proc.stdout
        line = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([out], [], [], 0.1)
            if r:
                line = out.readline()
                break
            if self._proc.poll() is not None:
                break
        out.close()
        if line.strip() != b"ready":
            try:
                log = (self.sdir / "forwarder.log").read_text()[-2000:]
            except OSError:
                log = ""
            raise NetlabError(f"forwarder did not start: {log.strip() or 'no output'}")

    def stop(self) -> None:
        """Tear down everything this lab created. Idempotent."""
        if not getattr(self, "_started", False):
            return
        self._started = False
        for p in self._children:
            if p.poll() is None:
                try:
                    p.kill()
                except OSError:
                    pass
        teardown(self.sdir)
        for p in self._children:
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        if self._proc is not None:
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=3)
        self._restore_signal_handler()
        with _live_lock:
            _live.discard(self)

    def detach(self) -> None:
        """Leave the lab running (daemon mode): this object forgets it."""
        self._started = False
        self._restore_signal_handler()
        with _live_lock:
            _live.discard(self)

    def _install_signal_handler(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            def on_term(signum, frame):
                raise SystemExit(128 + signum)
            self._old_sigterm = signal.signal(signal.SIGTERM, on_term)

    def _restore_signal_handler(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    @property
    def forwarder_pid(self) -> int | None:
        st = read_state(self.sdir)
        return st.get("forwarder_pid") if st else None

    def alive(self) -> bool:
        pid = self.forwarder_pid
        return pid is not None and pid > 0 and pid_alive(pid)

    # -- running things in the namespaces -----------------------------------

    def ns(self, node: str) -> str:
        return self.namespaces[_check_node(node)]

    def addr(self, node: str) -> str:
        return self.addrs[_check_node(node)]

    def dev(self, node: str) -> str:
        return self.tuns[_check_node(node)]

    def command(self, node: str, cmd: Sequence[str] | str) -> list[str]:
        """The argv that runs `cmd` inside the node's namespace."""
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        return ["ip", "netns", "exec", self.ns(node), *cmd]

    def popen(self, node: str, cmd: Sequence[str] | str, **kwargs) -> subprocess.Popen:
        """Start `cmd` in the node's namespace; it is killed when the lab stops."""
        p = subprocess.Popen(self.command(node, cmd), **kwargs)
        self._children.append(p)
        return p

    def run(self, node: str, cmd: Sequence[str] | str, *, timeout: float = 30,
            check: bool = False, capture_output: bool = True, text: bool = True,
            **kwargs) -> subprocess.CompletedProcess:
        """Run `cmd` in the node's namespace and wait (bounded by `timeout`)."""
        return subprocess.run(self.command(node, cmd), timeout=timeout, check=check,
                              capture_output=capture_output, text=text, **kwargs)

    # -- control ------------------------------------------------------------

    def _request(self, msg: dict, timeout: float = 5.0) -> dict:
        try:
            return request(self.sdir, msg, timeout=timeout)
        except (OSError, ValueError) as exc:
            raise NetlabError(f"forwarder of {self.name!r} not reachable: {exc}") from exc

    def set_link(self, direction: str = "both", **changes: Any) -> dict[str, LinkConfig]:
        """Change link properties now, e.g. set_link('a->b', loss=1.0, delay='50ms')."""
        expand_direction(direction)
        normalize_changes(changes)
        reply = self._request({"op": "set", "direction": direction, "changes": changes})
        return {d: LinkConfig.from_dict(c) for d, c in reply["links"].items()}

    def link(self, direction: str) -> LinkConfig:
        (d,) = expand_direction(direction)
        return LinkConfig.from_dict(self._request({"op": "get"})["links"][d])

    def schedule(self, entries: Iterable[tuple[float, str, dict]]) -> None:
        """Add timed changes, offsets in seconds from now: [(5, 'both', {'down': True}), ...]."""
        entries = [(float(t), d, dict(c)) for t, d, c in entries]
        self._request({"op": "schedule", "entries": entries})

    def clear_schedule(self) -> None:
        self._request({"op": "clear_schedule"})

    def reset_stats(self) -> None:
        """Zero the counters (link and forwarder), e.g. after a warm-up."""
        self._request({"op": "reset_stats"})
        self._kernel_base = self._kernel_counters()
        if self._owner or read_state(self.sdir):
            st = read_state(self.sdir)
            if st is not None:
                st["kernel_base"] = self._kernel_base
                write_state(self.sdir, st)

    def _kernel_counters(self) -> dict[str, dict[str, int]]:
        out = {}
        for n in NODES:
            proc = ip("-n", self.namespaces[n], "-s", "-j", "link", "show", "dev", self.tuns[n],
                      check=False)
            try:
                s = json.loads(proc.stdout)[0]["stats64"]
                out[n] = {"tx_dropped": s["tx"]["dropped"], "tx_packets": s["tx"]["packets"],
                          "rx_dropped": s["rx"]["dropped"]}
            except (ValueError, LookupError, TypeError):
                out[n] = {"tx_dropped": 0, "tx_packets": 0, "rx_dropped": 0}
        return out

    def stats(self) -> dict:
        """Counters since start or reset_stats(), per direction and for the forwarder.

        stats['links']['a->b'] has rx_/tx_packets/bytes, dropped{reason: n},
        corrupted, duplicated, reordered, queue{...}, queue_delay{...},
        latency{...} and kernel_dropped (packets the sending TUN dropped
        because the forwarder did not read them in time).
        """
        st = self._request({"op": "stats"})["stats"]
        now = self._kernel_counters()
        for n, d in (("a", "a->b"), ("b", "b->a")):
            base = self._kernel_base.get(n, {})
            st["links"][d]["kernel_dropped"] = now[n]["tx_dropped"] - base.get("tx_dropped", 0)
        return st

    def saturated(self, stats: dict | None = None, *, load_threshold: float = 0.85,
                  late_fraction: float = 0.01) -> list[str]:
        """Reasons the emulator itself may have limited the traffic since the last reset.

        An empty list means the forwarder kept up: below `load_threshold` CPU in
        every 0.5 s window, no packets dropped by the kernel for lack of
        reading, and fewer than `late_fraction` of timed deliveries more than
        2 ms late. A benchmark should refuse to report a result otherwise.
        """
        st = stats or self.stats()
        fw = st["forwarder"]
        reasons = []
        peak = max(fw["peak_load"], fw["load_window"])
        if peak >= load_threshold:
            reasons.append(f"forwarder CPU peaked at {peak:.0%} of a core")
        kd = sum(st["links"][d]["kernel_dropped"] for d in DIRECTIONS)
        if kd > 0:
            reasons.append(f"kernel dropped {kd} packets the forwarder did not read in time")
        late = fw["late"]
        if late["count"] and late["over_2ms"] / late["count"] > late_fraction:
            reasons.append(f"{late['over_2ms']} of {late['count']} timed deliveries were "
                           f"more than 2 ms late (max {late['max'] * 1e3:.1f} ms)")
        return reasons

    def measure_capacity(self, seconds: float = 2.0, size: int = 1400,
                         direction: str = "a->b") -> dict:
        """Blast `size`-byte UDP packets across this lab and report what the forwarder passed.

        Meaningful on a lab without impairments. See gannet.netlab.capacity.
        """
        from .capacity import measure_on
        return measure_on(self, seconds=seconds, size=size, direction=direction)


def _stop_all() -> None:
    with _live_lock:
        labs = list(_live)
    for lab in labs:
        try:
            lab.stop()
        except Exception:
            pass


atexit.register(_stop_all)
