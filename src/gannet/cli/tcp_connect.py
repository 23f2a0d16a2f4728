"""`gannet tcp connect`: one connection, step by step, on raw sockets.

A small blocking driver around `TcpEndpoint` (no event loop: one socket, one
connection), so that each packet can be reported as it leaves or arrives,
in seed 002's words. Steps go to stderr; the server's bytes go to stdout.
"""

from __future__ import annotations

import select
import sys
import time

from gannet.cli.main import CLIError
from gannet.cli.tcp import escaped_text
from gannet.config import Config
from gannet.core.events import ConnectionTerminated
from gannet.core.states import State
from gannet.core.tcp_endpoint import TcpEndpoint
from gannet.io.endpoint import _SYSTEM_RANDOM
from gannet.io.rawtcp import RawTcpSocket, path_mtu, route_source
from gannet.wire import ipv4
from gannet.wire import tcp as tcpwire
from gannet.wire.segment import ACK, FIN, RST, SYN

_DONE = (State.CLOSED, State.TIME_WAIT)


class Session:
    """The endpoint, its socket, and the reporting of what crosses it."""

    def __init__(self, host: str, port: int, err) -> None:
        self.err = err
        local = route_source(host)
        self.sock = RawTcpSocket(local, 0)
        self.ep = TcpEndpoint(self.sock.port, Config(), _SYSTEM_RANDOM, local_ip=local,
                              mtu=path_mtu(local))
        self.peer = (host, port)
        self.handshake_reported = 0  # 0 nothing, 1 SYN, 2 SYN-ACK, 3 ACK
        self.fin_sent = self.fin_received = False
        self.reset = False

    def say(self, line: str) -> None:
        print(line, file=self.err, flush=True)

    # ------------------------------------------------------------ moving
    def flush(self) -> None:
        for packet, _addr in self.ep.datagrams_to_send(time.monotonic()):
            self._report_out(packet)
            try:
                self.sock.sendto(packet, (self.peer[0], 0))
            except BlockingIOError:
                pass  # lost, as on a full queue: the connection resends it

    def pump(self, until: float) -> None:
        """Receive and run timers until `until` or something arrives."""
        timer = self.ep.get_timer()
        now = time.monotonic()
        wait = max(0.0, min(until, timer if timer is not None else until) - now)
        ready, _, _ = select.select([self.sock], [], [], wait)
        now = time.monotonic()
        if ready:
            for _ in range(256):
                try:
                    packet = self.sock.recv(70000)
                except BlockingIOError:
                    break
                self._report_in(packet)
                self.ep.receive_datagram(packet, None, now)
        timer = self.ep.get_timer()
        if timer is not None and timer <= now:
            self.ep.handle_timer(now)
        self.flush()

    # --------------------------------------------------------- reporting
    def _decode(self, packet: bytes | bytearray):
        try:
            src, dst, _proto, start, end = ipv4.parse(packet)
            return tcpwire.decode(memoryview(packet)[start:end], src, dst, partial=True)[2]
        except (ipv4.IPv4Error, tcpwire.TcpWireError):
            return None

    def _report_out(self, packet: bytes | bytearray) -> None:
        seg = self._decode(packet)
        if seg is None:
            return
        if seg.flags & SYN and self.handshake_reported == 0:
            self.handshake_reported = 1
            self.say(f"[>] Sending SYN (seq={seg.seq})")
        elif (seg.flags & ACK and not seg.flags & (SYN | RST) and self.handshake_reported == 2):
            self.handshake_reported = 3
            self.say(f"[>] Sending ACK (seq={seg.seq}, ack={seg.ack})")
        if seg.flags & FIN and not self.fin_sent:
            self.fin_sent = True
            self.say(f"[>] Sending FIN (seq={seg.seq + len(seg.payload)}, ack={seg.ack})")

    def _report_in(self, packet: bytes) -> None:
        seg = self._decode(packet)
        if seg is None:
            return
        if seg.flags & SYN and seg.flags & ACK and self.handshake_reported == 1:
            self.handshake_reported = 2
            self.say(f"[<] Received SYN-ACK (seq={seg.seq}, ack={seg.ack})")
        if seg.flags & RST:
            self.reset = True
        if seg.flags & FIN and not self.fin_received:
            self.fin_received = True
            self.say(f"[<] Received FIN (seq={seg.seq + len(seg.payload)})")

    def close(self) -> None:
        self.sock.close()


def connect_and_send(host: str, port: int, data: bytes, *, timeout: float = 5.0,
                     linger: float = 1.0) -> int:
    out = sys.stdout.buffer
    err = sys.stderr
    try:
        session = Session(host, port, err)
    except PermissionError as exc:
        raise CLIError(str(exc)) from exc
    target = f"{host}:{port}"
    try:
        session.say(f"[*] Starting TCP handshake with {target}")
        conn = session.ep.connect((host, port), time.monotonic())
        conn.hold_handshake_ack = False  # the seed sends the ACK on its own
        session.flush()
        deadline = time.monotonic() + timeout
        while conn.state == State.SYN_SENT and time.monotonic() < deadline:
            session.pump(deadline)
        if conn.state != State.ESTABLISHED:
            if session.reset or isinstance(conn.error, ConnectionRefusedError):
                raise CLIError(f"connection refused by {target} (RST)")
            raise CLIError(f"no answer from {target} within {timeout:g} s (unreachable?)")
        session.flush()
        session.say("[+] TCP connection established!")
        session.say(f"[>] Sending data: {escaped_text(data)}")

        def drain_received() -> None:
            chunk = conn.recv(1 << 20)
            while chunk:
                out.write(chunk)
                out.flush()
                chunk = conn.recv(1 << 20)

        sent = 0
        while sent < len(data) and conn.state in (State.ESTABLISHED, State.CLOSE_WAIT):
            n = conn.send(memoryview(data)[sent:])
            sent += n
            session.flush()
            if sent < len(data):
                session.pump(time.monotonic() + 0.05)
            drain_received()
        # Data sent successfully: the peer acknowledged every byte.
        give_up = time.monotonic() + max(timeout, 1.0)
        while (conn.snd_una < conn.iss + 1 + len(data) and time.monotonic() < give_up
               and conn.state not in _DONE):
            session.pump(give_up)
            drain_received()
        if conn.snd_una < conn.iss + 1 + len(data):
            raise CLIError(f"{target} did not acknowledge the data"
                           + (" (connection reset)" if session.reset else ""))
        session.say("[*] Data sent successfully")
        # Whatever the server answers, until it is quiet for `linger` seconds.
        quiet = time.monotonic() + linger
        while time.monotonic() < quiet and not conn.eof and conn.state not in _DONE:
            before = conn.stats.bytes_received
            session.pump(quiet)
            drain_received()
            if conn.stats.bytes_received != before:
                quiet = time.monotonic() + linger
        drain_received()
        conn.close(time.monotonic())
        session.flush()
        give_up = time.monotonic() + max(timeout, 1.0)
        while conn.state not in _DONE and time.monotonic() < give_up:
            session.pump(give_up)
            drain_received()
            if conn.eof:
                conn.close(time.monotonic())
        drain_received()
        while True:
            ev = session.ep.next_event()
            if ev is None:
                break
            if isinstance(ev, ConnectionTerminated) and ev.error is not None and conn.state != State.TIME_WAIT:
                raise CLIError(f"connection to {target} ended: {ev.error}")
        if conn.state in _DONE:
            session.say(f"[+] Connection closed ({conn.state})")
        else:
            session.say(f"[!] Connection not closed after {max(timeout, 1.0):g} s ({conn.state})")
            return 1
        return 0
    finally:
        session.close()
