"""Meeting the peer: listen and connect on one UDP port until one session results.

Both peers run the same command. Each binds one Gannet endpoint on its
port, listens on it, and keeps connecting from it to the peer's port until
a connection is established (the first started side sees its SYNs refused
until the other side starts). Depending on timing this yields one
connection (one side accepted, or both connected at the same moment: a
simultaneous open) or two (each side's SYN reached a listener).

Every established connection starts with a HELLO frame each way carrying the
peer's name and a random nonce. The side with the larger nonce leads: it
keeps the first connection on which the HELLOs were exchanged, says so with a
SELECT frame, and closes any other. The follower waits for SELECT. So both
sides settle on the same single connection whatever the timing.

Only the peer the user named is met: a connection from any other address
(another port on the same host included: the peer connects from the port it
listens on) is closed at once with a system line, so a third party can
neither pose as the peer nor take its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ... import Config
from ...crypto.endpoint import HandshakeFailed
from ...io.aio import Server, StreamReader, StreamWriter, connect_endpoint
from ...io.endpoint import AioEndpoint, create_endpoint
from . import framing
from .framing import FrameType

log = logging.getLogger("gannet.chat")

RETRY_INTERVAL = 0.5  # between connection attempts while the peer is not there
ATTEMPT_TIMEOUT = 3.0  # one SYN exchange; silence (no ICMP refusal) means retry
HELLO_TIMEOUT = 10.0
MAX_REFUSED_SHOWN = 32  # distinct strangers named in a system line; more are refused silently


@dataclass
class Link:
    """The one connection to the peer, greeted."""

    reader: StreamReader
    writer: StreamWriter
    peer_name: str
    peer_address: object
    peer_nonce: int


@dataclass
class _Candidate:
    reader: StreamReader
    writer: StreamWriter
    outgoing: bool
    task: asyncio.Task | None = None
    hello: dict | None = field(default=None)


class Rendezvous:
    """Owns the endpoint; `meet()` returns one Link each time the peer is there."""

    def __init__(self, aep: AioEndpoint, peer: object, name: str, config: Config,
                 status: Callable[[str], None] = lambda _msg: None) -> None:
        self.aep = aep
        self.peer = peer
        self.name = name
        self.config = config
        self.status = status
        self.nonce = random.SystemRandom().getrandbits(63)
        self._meeting: asyncio.Future | None = None
        self._candidates: list[_Candidate] = []
        self._have_connection = asyncio.Event()
        self.refused: dict[str, int] = {}  # stranger's address -> connections refused
        self.server = Server(aep, self._on_incoming, limit=framing.MAX_PAYLOAD * 2, backlog=8)
        aep.on_refused = self._on_refused

    @classmethod
    async def create(cls, port: int, peer_host: str, peer_port: int, name: str, config: Config,
                     status: Callable[[str], None] = lambda _msg: None,
                     bind_host: str | None = None) -> Rendezvous:
        loop = asyncio.get_running_loop()
        import socket

        infos = await loop.getaddrinfo(peer_host, peer_port, type=socket.SOCK_DGRAM)
        infos = [i for i in infos if i[0] in (socket.AF_INET, socket.AF_INET6)]
        if not infos:
            raise socket.gaierror(socket.EAI_NONAME, "no IPv4 or IPv6 address")
        family, addr = infos[0][0], infos[0][4]
        if bind_host is None:
            bind_host = "::" if family == socket.AF_INET6 else "0.0.0.0"
        aep = await create_endpoint(bind_host, port, config=config, family=family)
        return cls(aep, addr[:2], name, config, status)

    @property
    def local_port(self) -> int:
        return self.aep.local_address[1]

    def close(self) -> None:
        self.server.close()
        for cand in self._candidates:
            cand.writer.abort()
        self.aep.close()

    # ------------------------------------------------------------ meeting
    def is_peer(self, address: object) -> bool:
        """Whether `address` (a peername) is the peer we were told about."""
        return _same_address(address, self.peer)

    def _on_incoming(self, reader: StreamReader, writer: StreamWriter) -> None:
        address = writer.get_extra_info("peername")
        if not self.is_peer(address):
            writer.abort()
            key = _fmt(address)
            if key not in self.refused and len(self.refused) < MAX_REFUSED_SHOWN:
                self.status(f"refused a connection from {key}: not the peer ({_fmt(self.peer)})")
            if key in self.refused or len(self.refused) < MAX_REFUSED_SHOWN:
                self.refused[key] = self.refused.get(key, 0) + 1
            return
        if self._meeting is None or self._meeting.done():
            writer.close()  # already in a session: one peer at a time
            return
        self._add(reader, writer, outgoing=False)

    def _add(self, reader, writer, outgoing: bool) -> None:
        cand = _Candidate(reader, writer, outgoing)
        self._candidates.append(cand)
        self._have_connection.set()
        cand.task = asyncio.get_running_loop().create_task(self._greet(cand))

    async def meet(self) -> Link:
        """Connect (retrying) and accept until one greeted connection is agreed on."""
        loop = asyncio.get_running_loop()
        self._meeting = loop.create_future()
        self._candidates = []
        self._have_connection.clear()
        connector = loop.create_task(self._connect_loop())
        try:
            return await self._meeting
        finally:
            connector.cancel()
            with contextlib.suppress(BaseException):
                await connector
            chosen = self._meeting.result().writer if (
                self._meeting.done() and not self._meeting.cancelled()
                and self._meeting.exception() is None) else None
            for cand in self._candidates:
                if cand.writer is not chosen:
                    if cand.task is not None:
                        cand.task.cancel()
                    cand.writer.close()
            self._candidates = []
            self._meeting = None

    async def _connect_loop(self) -> None:
        announced = False
        while True:
            if self._has_live_candidate():
                self._have_connection.clear()
                await self._have_connection.wait()  # set again when one is added or dies
                continue
            if not announced:
                self.status(f"connecting to {_fmt(self.peer)} ...")
                announced = True
            try:
                # asyncio.timeout, not wait_for: a cancel arriving just as the
                # attempt fails must not be lost (wait_for would return the error).
                async with asyncio.timeout(ATTEMPT_TIMEOUT):
                    reader, writer = await connect_endpoint(
                        self.aep, self.peer, self.config, framing.MAX_PAYLOAD * 2)
            except HandshakeFailed as exc:
                # A wrong code or key is not worth retrying: the peer said no.
                self._give_up(exc)
                return
            except (OSError, TimeoutError) as exc:
                log.debug("connect to %r: %r", self.peer, exc)
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from None
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            if self._meeting is None or self._meeting.done():
                writer.close()
                return
            self._add(reader, writer, outgoing=True)

    def _on_refused(self, ev) -> None:
        """The peer's connection to us failed its key exchange (a wrong code)."""
        self._give_up(HandshakeFailed(str(ev.error)))

    def _give_up(self, exc: BaseException) -> None:
        if self._meeting is not None and not self._meeting.done():
            self._meeting.set_exception(exc)

    def _has_live_candidate(self) -> bool:
        return any(c.task is not None and not c.task.done() for c in self._candidates)

    async def _greet(self, cand: _Candidate) -> None:
        try:
            cand.writer.write(framing.encode_json(FrameType.HELLO, {
                "name": self.name, "nonce": self.nonce, "version": framing.PROTOCOL_VERSION,
                "connected": cand.outgoing}))
            async with asyncio.timeout(HELLO_TIMEOUT):
                frame = await framing.read_frame(cand.reader)
            if frame is None or frame.type != FrameType.HELLO:
                raise ConnectionResetError("no HELLO")
            hello = frame.json()
            nonce = int(hello.get("nonce", 0))
            cand.hello = hello
            if nonce == self.nonce:
                raise ConnectionResetError("connected to ourselves")
            # Shown only now: a connection the other side accepts and closes at
            # once (it is busy, or quitting) is not worth a line.
            peer_name = str(hello.get("name") or "peer")[:64]
            # Both sides connected on this one connection: their SYNs crossed.
            simultaneous = cand.outgoing and hello.get("connected") is True
            self.status(f"handshake done: "
                        f"{_describe_handshake(cand.writer, cand.outgoing, simultaneous)}; "
                        f"hello from {peer_name}; syncing ...")
            if self.nonce > nonce:  # we lead: the first greeted connection wins
                if self._meeting is not None and not self._meeting.done():
                    cand.writer.write(framing.encode_json(FrameType.SELECT, {}))
                    self._resolve(cand, lead=True)
                else:
                    cand.writer.close()
                return
            frame = await framing.read_frame(cand.reader)
            if frame is None or frame.type != FrameType.SELECT:
                raise ConnectionResetError("not selected")
            self._resolve(cand, lead=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - this connection failed; others may not
            log.debug("greeting failed: %r", exc)
            cand.writer.abort() if not isinstance(exc, ConnectionError) else cand.writer.close()
        finally:
            self._have_connection.set()  # wake the connector: it re-checks for live ones

    def _resolve(self, cand: _Candidate, lead: bool) -> None:
        if self._meeting is None or self._meeting.done():
            return
        hello = cand.hello or {}
        name = str(hello.get("name") or "peer")[:64]
        chooser = "we chose" if lead else f"{name} chose"
        self.status(f"synced: greetings exchanged with {name}, one connection kept ({chooser} it)")
        addr = cand.writer.get_extra_info("peername")
        self._meeting.set_result(Link(cand.reader, cand.writer, name, addr, int(hello["nonce"])))


def _describe_handshake(writer: StreamWriter, outgoing: bool, simultaneous: bool = False) -> str:
    """'connected to 127.0.0.1:9002 (our SYN answered, RTT 0.4 ms)', for the status line."""
    addr = _fmt(writer.get_extra_info("peername"))
    if simultaneous:
        how = f"connected to {addr} (simultaneous open: both SYNs crossed"
    elif outgoing:
        how = f"connected to {addr} (our SYN answered"
    else:
        how = f"accepted {addr} (their SYN answered"
    conn = writer.get_extra_info("connection")
    srtt = getattr(conn, "srtt", None)
    return how + (f", RTT {srtt * 1000:.1f} ms)" if srtt else ")")


def _same_address(a: object, b: object) -> bool:
    """Same host (compared as IP addresses, so "::ffff:1.2.3.4" is 1.2.3.4) and port."""
    if not (isinstance(a, tuple) and isinstance(b, tuple) and len(a) >= 2 and len(b) >= 2):
        return False
    if a[1] != b[1]:
        return False
    try:
        ha = ipaddress.ip_address(str(a[0]).split("%")[0])  # "%eth0": an IPv6 scope
        hb = ipaddress.ip_address(str(b[0]).split("%")[0])
    except ValueError:
        return a[0] == b[0]
    ha = getattr(ha, "ipv4_mapped", None) or ha
    hb = getattr(hb, "ipv4_mapped", None) or hb
    return ha == hb


def _fmt(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in str(host) else f"{host}:{addr[1]}"
    return str(addr)

