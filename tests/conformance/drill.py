"""A small packetdrill-style script runner, for Gannet's TCP wire and for Linux.

A script drives one TCP endpoint, the system under test (SUT), from the
network side (segments it injects, segments it expects) and from the
application side (listen, connect, write, read, shutdown, abort). Lines:

    TIME < FLAGS SEQ ack N win N <OPTIONS>     inject a segment at TIME
    TIME > FLAGS SEQ ack N win N <OPTIONS>     expect one from the SUT at TIME
    TIME > SEGMENT | SEGMENT                   expect either form
    TIME >? SEGMENT                            allow (not require) one
    TIME listen | connect | accept | write N | read N | shutdown | abort | eof

TIME is seconds from the start, `+D` after the previous line, or a window
`A~B` (a `>` line then accepts the segment anywhere in it; a plain time
allows the runner's tolerance either side). FLAGS are packetdrill's: S, F,
R, P and `.` for ACK (`S.` is SYN-ACK). SEQ is `start:end(len)` counted
from each side's initial sequence number (the script's is fixed, the SUT's
is learned from its SYN), so scripts do not depend on random ISNs; `ack`
counts from the other side's. OPTIONS: `mss N`, `sackOK`, `TS val N ecr N`,
`nop`, `wscale N`, `sack A:B A:B`, `eol`; `*` matches any value, and in
an injected segment `ecr *` echoes the SUT's last TSval. On `>` lines, what
is left out is not checked (no `<...>`: options not checked; no `win`:
window not checked), and PSH is ignored (stacks differ in where they set
it). Every segment the SUT sends must be expected, in order.

Two backends run the same scripts: `GannetBackend` (TcpEndpoint, sans I/O,
on a virtual clock: deterministic) and `KernelBackend` (the Linux stack in
a network namespace, reached through a TUN device), so the scripts
themselves are checked against Linux.
"""

from __future__ import annotations

import random
import re
import select
import time
from dataclasses import dataclass, field

from gannet.wire import ipv4
from gannet.wire import tcp as tcpwire
from gannet.wire.segment import ACK, FIN, PSH, RST, SEQ_MOD, SYN, Segment

LOCAL, REMOTE = "192.0.2.1", "192.0.2.2"  # SUT, script (RFC 5737 TEST-NET-1)
LOCAL_PORT, REMOTE_PORT = 8080, 40000
SCRIPT_ISN = 1_000_000_000
P_LOCAL, P_REMOTE = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
_FLAGS = {"S": SYN, "F": FIN, "R": RST, "P": PSH, ".": ACK}


class DrillError(AssertionError):
    pass


@dataclass
class Spec:
    flags: int
    start: int
    end: int
    ack: int | None = None
    win: int | None = None
    options: list[tuple] | None = None


@dataclass
class Line:
    number: int
    text: str
    lo: float
    hi: float
    kind: str  # "<", ">", or an app command
    spec: Spec | None = None
    arg: int | None = None
    exact: bool = field(default=True)
    alternatives: list[Spec] = field(default_factory=list)
    optional: bool = False


_SEG_RE = re.compile(
    r"^(?P<flags>[SFRP.]+)\s+(?P<start>\d+):(?P<end>\d+)\((?P<len>\d+)\)"
    r"(?:\s+ack\s+(?P<ack>\d+))?(?:\s+win\s+(?P<win>\d+))?\s*(?:<(?P<opts>[^>]*)>)?\s*$")


def _options(text: str) -> list[tuple]:
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        words = part.split()
        name = words[0]
        if name == "mss":
            out.append(("mss", _val(words[1])))
        elif name == "wscale":
            out.append(("wscale", _val(words[1])))
        elif name == "sackOK":
            out.append(("sackOK",))
        elif name == "TS":
            out.append(("TS", _val(words[2]), _val(words[4])))
        elif name == "sack":
            out.append(("sack", tuple(tuple(int(x) for x in b.split(":")) for b in words[1:])))
        elif name in ("nop", "eol"):
            out.append((name,))
        else:
            raise DrillError(f"unknown option {part!r}")
    return out


def _val(word: str) -> int | None:
    return None if word == "*" else int(word)


def parse(text: str) -> list[Line]:
    lines, prev = [], 0.0
    for n, raw in enumerate(text.splitlines(), 1):
        body = raw.split("//")[0].strip()
        if not body:
            continue
        when, _, rest = body.partition(" ")
        rest = rest.strip()
        if "~" in when:
            a, b = when.split("~")
            lo, hi, exact = _time(a, prev), _time(b, prev), False
        else:
            lo = hi = _time(when, prev)
            exact = True
        prev = lo
        optional = rest.startswith(">?")
        if optional:
            rest = ">" + rest[2:]
        if rest[0] in "<>":
            specs = [_spec(n, alt) for alt in rest[1:].split("|")]
            if rest[0] == "<" and len(specs) > 1:
                raise DrillError(f"line {n}: alternatives are for expected segments")
            lines.append(Line(n, raw.strip(), lo, hi, rest[0], specs[0], exact=exact,
                              alternatives=specs, optional=optional))
        else:
            words = rest.split()
            arg = int(words[1]) if len(words) > 1 else None
            lines.append(Line(n, raw.strip(), lo, hi, words[0], arg=arg))
    return lines


def _spec(n: int, text: str) -> Spec:
    m = _SEG_RE.match(text.strip())
    if not m:
        raise DrillError(f"line {n}: cannot parse segment {text.strip()!r}")
    flags = 0
    for ch in m.group("flags"):
        flags |= _FLAGS[ch]
    start, end = int(m.group("start")), int(m.group("end"))
    if int(m.group("len")) != end - start:
        raise DrillError(f"line {n}: length does not match {start}:{end}")
    return Spec(flags, start, end,
                int(m.group("ack")) if m.group("ack") is not None else None,
                int(m.group("win")) if m.group("win") is not None else None,
                _options(m.group("opts")) if m.group("opts") is not None else None)


def _time(word: str, prev: float) -> float:
    return prev + float(word[1:]) if word.startswith("+") else float(word)


# ------------------------------------------------------------------ runner
class Runner:
    """Plays a script against a backend; raises DrillError at the first
    difference, naming the line."""

    def __init__(self, backend, tolerance: float) -> None:
        self.b = backend
        self.tol = tolerance
        self.local_isn: int | None = None
        self.last_tsval = 0
        self.log: list[str] = []
        self._held = None  # a segment an optional line looked at and left

    def run(self, text: str) -> list[str]:
        for line in parse(text):
            try:
                self._step(line)
            except DrillError as exc:
                raise DrillError(f"line {line.number} `{line.text}`: {exc}\n" + "\n".join(self.log[-12:]))
        # Nothing unexpected right after the last line.
        extra = self._next(self.b.now() + min(self.tol, 0.05))
        if extra is not None:
            raise DrillError(f"unexpected segment after the script: {self._show(extra[1])}\n"
                             + "\n".join(self.log[-12:]))
        self.b.close()
        return self.log

    def _step(self, line: Line) -> None:
        b = self.b
        if line.kind == ">":
            self._expect(line)
            return
        # Inject and app commands happen at their time; what the SUT sends
        # before then must have been expected by an earlier line.
        early = self._next(line.lo)
        if early is not None:
            raise DrillError(f"unexpected segment at {early[0]:.3f}: {self._show(early[1])}")
        if line.kind == "<":
            seg = self._build(line.spec)
            self.log.append(f"{b.now():8.3f} < {seg!r}")
            b.inject(seg)
        else:
            self.log.append(f"{b.now():8.3f} {line.kind} {line.arg if line.arg is not None else ''}")
            b.app(line.kind, line.arg)

    def _expect(self, line: Line) -> None:
        lo, hi = (line.lo - self.tol, line.hi + self.tol) if line.exact else (line.lo, line.hi)
        got = self._next(hi)
        if got is None:
            if line.optional:
                return
            raise DrillError(f"no segment by {hi:.3f}")
        at, seg = got
        if line.optional and not self._matches(line, seg):
            self._held = got  # not this one: it is for the next line
            return
        self.log.append(f"{at:8.3f} > {seg!r}")
        if at < lo:
            raise DrillError(f"segment came at {at:.3f}, before {lo:.3f}: {self._show(seg)}")
        errors = []
        for spec in line.alternatives:  # `A | B`: either form conforms
            try:
                self._match(spec, seg)
                return
            except DrillError as exc:
                errors.append(str(exc))
        raise DrillError("; or ".join(errors))

    def _next(self, deadline: float):
        held, self._held = self._held, None
        return held if held is not None else self.b.outbound(deadline)

    def _matches(self, line: Line, seg: Segment) -> bool:
        isn, ts = self.local_isn, self.last_tsval
        for spec in line.alternatives:
            try:
                self._match(spec, seg)
                return True
            except DrillError:
                pass
        self.local_isn, self.last_tsval = isn, ts
        return False

    def _show(self, seg: Segment) -> str:
        return repr(seg)

    # --------------------------------------------------------- segments
    def _build(self, spec: Spec) -> Segment:
        seg = Segment((SCRIPT_ISN + spec.start) % SEQ_MOD, 0, spec.flags,
                      spec.win if spec.win is not None else 65535, b"x" * (spec.end - spec.start))
        if spec.ack is not None:
            if self.local_isn is None:
                raise DrillError("ack before the SUT's ISN is known")
            seg.ack = (self.local_isn + spec.ack) % SEQ_MOD
        for opt in spec.options or ():
            if opt[0] == "mss":
                seg.mss = opt[1]
            elif opt[0] == "wscale":
                seg.wscale = opt[1]
            elif opt[0] == "sackOK":
                seg.sack_permitted = True
            elif opt[0] == "TS":
                seg.tsval = opt[1]
                seg.tsecr = self.last_tsval if opt[2] is None else opt[2]
            elif opt[0] == "sack":
                seg.sack = tuple(((self.local_isn + a) % SEQ_MOD, (self.local_isn + z) % SEQ_MOD)
                                 for a, z in opt[1])
        return seg

    def _match(self, spec: Spec, seg: Segment) -> None:
        if seg.flags & SYN and self.local_isn is None:
            self.local_isn = seg.seq
        if self.local_isn is None:
            raise DrillError(f"the SUT sent {seg!r} before any SYN")
        if seg.tsval is not None:
            self.last_tsval = seg.tsval
        want_flags = spec.flags & ~PSH
        if seg.flags & ~PSH & 0x3F != want_flags:
            raise DrillError(f"flags: want {_flag_text(spec.flags)}, got {seg!r}")
        start = (seg.seq - self.local_isn) % SEQ_MOD
        if (start, start + len(seg.payload)) != (spec.start, spec.end):
            raise DrillError(f"sequence: want {spec.start}:{spec.end}, got "
                             f"{start}:{start + len(seg.payload)} ({seg!r})")
        if spec.ack is not None:
            ack = (seg.ack - SCRIPT_ISN) % SEQ_MOD
            if not seg.flags & ACK or ack != spec.ack:
                raise DrillError(f"ack: want {spec.ack}, got {ack} ({seg!r})")
        if spec.win is not None and seg.wnd != spec.win:
            raise DrillError(f"window: want {spec.win}, got {seg.wnd}")
        for opt in spec.options or ():
            name = opt[0]
            if name == "mss" and not _same(opt[1], seg.mss):
                raise DrillError(f"mss: want {opt[1]}, got {seg.mss}")
            if name == "wscale" and not _same(opt[1], seg.wscale):
                raise DrillError(f"wscale: want {opt[1]}, got {seg.wscale}")
            if name == "sackOK" and not seg.sack_permitted:
                raise DrillError("no SACK-permitted option")
            if name == "TS":
                if seg.tsval is None:
                    raise DrillError("no timestamps option")
                if opt[2] is not None and seg.tsecr != opt[2]:
                    raise DrillError(f"TS ecr: want {opt[2]}, got {seg.tsecr}")
            if name == "sack":
                blocks = tuple(((a - SCRIPT_ISN) % SEQ_MOD, (z - SCRIPT_ISN) % SEQ_MOD)
                               for a, z in seg.sack)
                if set(blocks) != set(opt[1]):
                    raise DrillError(f"sack: want {opt[1]}, got {blocks}")
        if spec.options is not None:
            named = {o[0] for o in spec.options}
            if seg.sack and "sack" not in named:
                raise DrillError(f"unexpected SACK blocks {seg.sack}")


def _same(want, got) -> bool:
    return got is not None if want is None else got == want


def _flag_text(flags: int) -> str:
    return "".join(ch for ch, f in _FLAGS.items() if flags & f) or "-"


# ---------------------------------------------------------------- backends
class GannetBackend:
    """Gannet's TcpEndpoint on a virtual clock."""

    def __init__(self, seed: int = 1, **config) -> None:
        from gannet.config import Config
        from gannet.core.tcp_endpoint import TcpEndpoint

        self.ep = TcpEndpoint(LOCAL_PORT, Config(**config), random.Random(seed), local_ip=LOCAL)
        self.t = 0.0
        self.conn = None
        self.queue: list[tuple[float, Segment]] = []

    def now(self) -> float:
        return self.t

    def inject(self, seg: Segment) -> None:
        data = tcpwire.encode(REMOTE_PORT, LOCAL_PORT, seg, P_REMOTE, P_LOCAL)
        self.ep.receive_datagram(ipv4.build(P_REMOTE, P_LOCAL, len(data)) + data, None, self.t)

    def outbound(self, deadline: float):
        while True:
            if self.queue:
                return self.queue.pop(0)
            for packet, _ in self.ep.datagrams_to_send(self.t):
                src, dst, _, start, end = ipv4.parse(packet)
                self.queue.append((self.t, tcpwire.decode(packet[start:end], src, dst)[2]))
            if self.queue:
                continue
            timer = self.ep.get_timer()
            if timer is not None and timer <= deadline:
                self.t = max(self.t, timer)
                self.ep.handle_timer(self.t)
                continue
            self.t = max(self.t, deadline)
            return None

    def app(self, cmd: str, arg: int | None) -> None:
        ep, t = self.ep, self.t
        if cmd == "listen":
            ep.listen()
        elif cmd == "connect":
            self.conn = ep.connect((REMOTE, REMOTE_PORT), t)
            self.conn.hold_handshake_ack = False
        elif cmd == "accept":
            self.conn = ep.accept()
            if self.conn is None:
                raise DrillError("nothing to accept")
        elif cmd == "write":
            n = self.conn.send(b"y" * arg)
            if n != arg:
                raise DrillError(f"write took {n} of {arg} bytes")
        elif cmd == "read":
            got = self.conn.recv(arg)
            if len(got) != arg:
                raise DrillError(f"read {len(got)} bytes, want {arg}")
        elif cmd == "eof":
            if not self.conn.eof or self.conn.recv(1):
                raise DrillError("no end of stream")
        elif cmd == "shutdown":
            self.conn.shutdown_write(t)
        elif cmd == "abort":
            self.conn.abort(t)
        else:
            raise DrillError(f"unknown command {cmd!r}")

    def close(self) -> None:
        pass


class KernelBackend:
    """Linux's TCP in the current network namespace, through a TUN device
    holding LOCAL (the kernel routes REMOTE's subnet to it). Run it in a
    namespace of its own: it adds an address and a device."""

    def __init__(self, tun_name: str = "drill0") -> None:
        import socket
        import subprocess

        from gannet.netlab.forwarder import open_tun

        self.socket = socket
        self.fd = open_tun(tun_name)
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "addr", "add", f"{LOCAL}/24", "dev", tun_name],
                    ["ip", "link", "set", tun_name, "up"]):
            subprocess.run(cmd, check=True)
        for key, value in (("net.ipv4.tcp_timestamps", "1"), ("net.ipv4.tcp_sack", "1"),
                           ("net.ipv4.tcp_window_scaling", "1"),
                           ("net.ipv4.tcp_syncookies", "0")):
            subprocess.run(["sysctl", "-qw", f"{key}={value}"], check=False)
        self.t0 = time.monotonic()
        self.listener = None
        self.sock = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def inject(self, seg: Segment) -> None:
        import os

        data = tcpwire.encode(REMOTE_PORT, LOCAL_PORT, seg, P_REMOTE, P_LOCAL)
        os.write(self.fd, ipv4.build(P_REMOTE, P_LOCAL, len(data)) + data)

    def outbound(self, deadline: float):
        import os

        while True:
            wait = deadline - self.now()
            wait = max(wait, 0)
            ready, _, _ = select.select([self.fd], [], [], wait)
            if not ready:
                return None
            packet = os.read(self.fd, 65536)
            at = self.now()
            try:
                src, dst, proto, start, end = ipv4.parse(packet)
            except ipv4.IPv4Error:
                continue
            if proto != ipv4.PROTO_TCP or src != P_LOCAL:
                continue  # IPv6 router solicitations and the like
            return at, tcpwire.decode(packet[start:end], src, dst, partial=True)[2]

    def app(self, cmd: str, arg: int | None) -> None:
        socket = self.socket
        if cmd == "listen":
            self.listener = socket.socket()
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((LOCAL, LOCAL_PORT))
            self.listener.listen(8)
            self.listener.setblocking(False)
        elif cmd == "connect":
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((LOCAL, LOCAL_PORT))
            self.sock.setblocking(False)
            try:
                self.sock.connect((REMOTE, REMOTE_PORT))
            except BlockingIOError:
                pass
        elif cmd == "accept":
            try:
                self.sock, _ = self.listener.accept()
            except BlockingIOError as exc:
                raise DrillError("nothing to accept") from exc
            self.sock.setblocking(False)
        elif cmd == "write":
            n = self.sock.send(b"y" * arg)
            if n != arg:
                raise DrillError(f"write took {n} of {arg} bytes")
        elif cmd == "read":
            got = self.sock.recv(arg)
            if len(got) != arg:
                raise DrillError(f"read {len(got)} bytes, want {arg}")
        elif cmd == "eof":
            if self.sock.recv(1) != b"":
                raise DrillError("no end of stream")
        elif cmd == "shutdown":
            self.sock.shutdown(socket.SHUT_WR)
        elif cmd == "abort":
            import struct

            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
        else:
            raise DrillError(f"unknown command {cmd!r}")

    def close(self) -> None:
        import os

        for s in (self.sock, self.listener):
            if s is not None:
                s.close()
        os.close(self.fd)


def main(argv: list[str]) -> int:
    """python drill.py kernel SCRIPT...: run scripts against this namespace's kernel."""
    import os
    import pathlib

    failures = 0
    for path in argv[1:]:
        backend = KernelBackend()
        try:
            log = Runner(backend, tolerance=0.06).run(pathlib.Path(path).read_text())
            print(f"ok {path}", flush=True)
            if os.environ.get("DRILL_VERBOSE"):
                print("\n".join(log), flush=True)
        except DrillError as exc:
            failures += 1
            print(f"FAIL {path}: {exc}", flush=True)
        finally:
            try:
                backend.close()
            except OSError:
                pass
        time.sleep(0.05)
    return 1 if failures else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
