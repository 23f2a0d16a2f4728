"""The forwarding engine: one Python process holding both TUN fds.

    python -m gannet.netlab.forwarder STATE_DIR

reads STATE_DIR/config.json, creates the TUN devices, moves each into its
namespace, opens STATE_DIR/control.sock and forwards until told to stop.

The loop is a single thread on epoll: each wake-up drains up to BATCH packets
per readable TUN fd, runs each through its direction's `Link`, writes packets
whose delivery time has come at once and puts the others on a heap keyed by
delivery time; the epoll timeout is the time to the heap's head. Nothing
loops over bytes in Python (corruption flips a few chosen bits).

Self-measurement for `Netlab.saturated()`: CPU time of this process per
0.5 s window (load), how late heap deliveries were written compared with
their scheduled time (lateness), and the largest read batch (a full batch
means the kernel had a backlog for us).
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

from .config import DIRECTIONS, LinkConfig, expand_direction
from .link import Link

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
BATCH = 256
LOAD_WINDOW = 0.5
LATE_THRESHOLD = 0.002  # a delivery this much past its time counts as late


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class Forwarder:
    def __init__(self, sdir: Path):
        self.sdir = Path(sdir)
        cfg = json.loads((self.sdir / "config.json").read_text())
        self.cfg = cfg
        seed = int(cfg.get("seed", 0))
        self.links = {d: Link(LinkConfig.from_dict(cfg["links"][d]), seed, d) for d in DIRECTIONS}
        self.parent_pid = cfg.get("parent_pid")
        self.running = True
        self.heap: list = []
        self.seq = 0
        self.pending = {d: 0 for d in DIRECTIONS}
        self.events: list = []  # (t, seq, directions, changes): the schedule
        self.t0 = time.monotonic()
        for entry in cfg.get("schedule", []):
            self._add_schedule(entry, self.t0)
        self.reset_stats()

    # -- stats ---------------------------------------------------------------

    def reset_stats(self) -> None:
        for link in self.links.values():
            link.reset_stats()
        now = time.monotonic()
        self.stats_since = now
        self.cpu0 = time.process_time()
        self.win_t, self.win_cpu = now, self.cpu0
        self.load = 0.0
        self.peak_load = 0.0
        self.late_n = self.late_over = 0
        self.late_sum = self.late_max = 0.0
        self.max_batch = self.full_batches = self.wakeups = 0

    def _window(self, now: float) -> None:
        if now - self.win_t >= LOAD_WINDOW:
            cpu = time.process_time()
            self.load = (cpu - self.win_cpu) / (now - self.win_t)
            self.peak_load = max(self.peak_load, self.load)
            self.win_t, self.win_cpu = now, cpu

    def stats(self) -> dict:
        now = time.monotonic()
        wall = now - self.stats_since
        return {
            "uptime": now - self.t0,
            "interval": wall,
            "links": {d: self.links[d].stats(now) for d in DIRECTIONS},
            "forwarder": {
                "pid": os.getpid(),
                "cpu_seconds": time.process_time() - self.cpu0,
                "cpu_load": (time.process_time() - self.cpu0) / wall if wall > 0 else 0.0,
                "load_window": self.load,
                "peak_load": self.peak_load,
                "heap": len(self.heap),
                "wakeups": self.wakeups,
                "max_batch": self.max_batch,
                "full_batches": self.full_batches,
                "late": {"count": self.late_n, "over_2ms": self.late_over,
                         "mean": self.late_sum / self.late_n if self.late_n else 0.0,
                         "max": self.late_max},
                "pending_schedule": len(self.events),
            },
        }

    # -- schedule ------------------------------------------------------------

    def _add_schedule(self, entry, base: float) -> None:
        t, direction, changes = entry
        dirs = expand_direction(direction)
        for d in dirs:  # validate now, not when it fires
            self.links[d].config.replace(**changes)
        self.seq += 1
        heapq.heappush(self.events, (base + float(t), self.seq, dirs, changes))

    def _run_schedule(self, now: float) -> None:
        while self.events and self.events[0][0] <= now:
            _, _, dirs, changes = heapq.heappop(self.events)
            for d in dirs:
                self.links[d].config = self.links[d].config.replace(**changes)

    # -- control -------------------------------------------------------------

    def handle(self, msg: dict) -> dict:
        op = msg.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "stats":
            return {"ok": True, "stats": self.stats()}
        if op == "reset_stats":
            self.reset_stats()
            return {"ok": True}
        if op == "get":
            return {"ok": True, "links": {d: self.links[d].config.to_dict() for d in DIRECTIONS}}
        if op == "set":
            dirs = expand_direction(msg.get("direction", "both"))
            new = {d: self.links[d].config.replace(**msg.get("changes", {})) for d in dirs}
            for d, c in new.items():
                self.links[d].config = c
            return {"ok": True, "links": {d: self.links[d].config.to_dict() for d in DIRECTIONS}}
        if op == "schedule":
            now = time.monotonic()
            for entry in msg.get("entries", []):
                self._add_schedule(entry, now)
            return {"ok": True, "pending": len(self.events)}
        if op == "clear_schedule":
            self.events.clear()
            return {"ok": True}
        if op == "stop":
            self.running = False
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    # -- main loop -----------------------------------------------------------

    def setup(self) -> None:
        cfg = self.cfg
        self.fds: dict[str, int] = {}
        for node in ("a", "b"):
            self.fds[node] = open_tun(cfg["tuns"][node])
        for node in ("a", "b"):
            from .state import ip
            ip("link", "set", "dev", cfg["tuns"][node], "netns", cfg["namespaces"][node])
        path = self.sdir / "control.sock"
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.bind(str(path))
        self.ctl.listen(16)
        self.ctl.setblocking(False)

    def run(self) -> None:
        fd_a, fd_b = self.fds["a"], self.fds["b"]
        # fd read from -> (direction, link, fd to write to)
        route = {fd_a: ("a->b", self.links["a->b"], fd_b), fd_b: ("b->a", self.links["b->a"], fd_a)}
        out_fd = {"a->b": fd_b, "b->a": fd_a}
        ep = select.epoll()
        ep.register(fd_a, select.EPOLLIN)
        ep.register(fd_b, select.EPOLLIN)
        ctl_fd = self.ctl.fileno()
        ep.register(ctl_fd, select.EPOLLIN)
        clients: dict[int, tuple[socket.socket, bytearray]] = {}
        heap = self.heap
        pending = self.pending
        read, write = os.read, os.write
        monotonic = time.monotonic
        heappush, heappop = heapq.heappush, heapq.heappop
        next_house = 0.0

        while self.running:
            now = monotonic()
            timeout = 0.25
            if heap:
                timeout = min(timeout, heap[0][0] - now)
            if self.events:
                timeout = min(timeout, self.events[0][0] - now)
            if timeout < 0:
                timeout = 0
            try:
                ready = ep.poll(timeout)
            except InterruptedError:
                continue
            self.wakeups += 1
            now = monotonic()
            for fd, _ev in ready:
                r = route.get(fd)
                if r is not None:
                    direction, link, dst = r
                    n = 0
                    while n < BATCH:
                        try:
                            pkt = read(fd, 65536)
                        except BlockingIOError:
                            break
                        n += 1
                        for t, p in link.submit(pkt, now):
                            if t <= now and not pending[direction]:
                                try:
                                    write(dst, p)
                                except OSError:
                                    link.tx_packets -= 1
                                    link.dropped["write_error"] += 1
                            else:
                                self.seq += 1
                                pending[direction] += 1
                                heappush(heap, (t, self.seq, direction, p))
                    if n > self.max_batch:
                        self.max_batch = n
                    if n == BATCH:
                        self.full_batches += 1
                elif fd == ctl_fd:
                    self._accept(ep, clients)
                else:
                    self._client(ep, clients, fd)
            if heap:
                now = monotonic()
                while heap and heap[0][0] <= now:
                    t, _, direction, p = heappop(heap)
                    pending[direction] -= 1
                    late = now - t
                    self.late_n += 1
                    self.late_sum += late
                    if late > self.late_max:
                        self.late_max = late
                    if late > LATE_THRESHOLD:
                        self.late_over += 1
                    try:
                        write(out_fd[direction], p)
                    except OSError:
                        link = self.links[direction]
                        link.tx_packets -= 1
                        link.dropped["write_error"] += 1
            if self.events and self.events[0][0] <= now:
                self._run_schedule(now)
            if now >= next_house:
                next_house = now + 0.25
                self._window(now)
                if self.parent_pid and os.getppid() != self.parent_pid:
                    self.orphaned = True
                    break
        for s, _ in clients.values():
            s.close()
        ep.close()

    def _accept(self, ep, clients) -> None:
        while True:
            try:
                s, _ = self.ctl.accept()
            except (BlockingIOError, InterruptedError):
                return
            s.setblocking(False)
            clients[s.fileno()] = (s, bytearray())
            ep.register(s.fileno(), select.EPOLLIN)

    def _client(self, ep, clients, fd) -> None:
        s, buf = clients[fd]
        try:
            chunk = s.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        buf += chunk
        if chunk and b"\n" not in buf and len(buf) < 1 << 20:
            return
        ep.unregister(fd)
        del clients[fd]
        if b"\n" in buf:
            try:
                reply = self.handle(json.loads(bytes(buf).split(b"\n", 1)[0]))
            except Exception as exc:  # a bad request must not kill the link
                reply = {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"}
            try:
                s.setblocking(True)
                s.settimeout(1.0)
                s.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass
        s.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sdir = Path(argv[0])
    fwd = Forwarder(sdir)
    fwd.orphaned = False

    def on_signal(signum, frame):
        fwd.running = False

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)  # the link's timing matters more than the apps'
    except OSError:
        pass
    try:
        fwd.setup()
        print("ready", flush=True)
        fwd.run()
    finally:
        for fd in getattr(fwd, "fds", {}).values():
            try:
                os.close(fd)  # non-persistent TUN devices vanish with their fd
            except OSError:
                pass
        try:
            (sdir / "control.sock").unlink()
        except OSError:
            pass
        if fwd.orphaned and fwd.cfg.get("cleanup_on_orphan"):
            from .state import teardown
            teardown(sdir, stop_fwd=False)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.EPERM):
            print(f"netlab forwarder: {exc}", file=sys.stderr)
            sys.exit(1)
        raise
