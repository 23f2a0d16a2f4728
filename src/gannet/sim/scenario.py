"""Ready-made scenarios on the simulator: one bulk transfer between two endpoints.

Used by the test suite (hundreds of seeds), by `gannet demo`, and by the
throughput snapshot: a client connects, writes `size` bytes, closes; the
server reads everything and closes when it sees the end of the stream.

`run_transfer(security=encrypted_pair())` runs the transfer between two
`SecureEndpoint`s, so that seeded simulated transfers cover the security
layer too: the handshake's key exchange, every datagram sealed and opened,
and what the link's corruption, duplication and reordering do to sealed
datagrams. Keys come from the OS (the security layer never takes a seeded
generator), so the bytes on the wire differ between runs; what the
simulator decides (loss, delay, which bit is flipped) does not depend on
them, so a seed still replays the same run: the same events at the same
virtual times (tests/simtransfer/test_encrypted_sim.py checks it).

Without `security` the endpoints are the plain core `Endpoint` (in clear).
That is the default here, unlike the API's and the tools', because the
simulator is the test bench of the core's protocol: the seeded tests, the
exact counts they assert and the throughput snapshot describe the core, and
the envelope would change every figure by its 15 bytes a datagram (and cost
about a third more CPU per seed) without exercising any more of the core.
The user-facing `gannet demo` runs encrypted unless told `--insecure`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import Config
from ..core.endpoint import Endpoint
from ..crypto.endpoint import SecureEndpoint, Security
from ..core.events import (
    ConnectionAvailable,
    ConnectionEstablished,
    ConnectionTerminated,
    DataReceived,
    SendSpaceAvailable,
    StreamEnded,
)
from .config import LinkConfig
from .network import Node, Simulator

CLIENT_ADDR = ("10.0.0.1", 40000)
SERVER_ADDR = ("10.0.0.2", 7000)


@dataclass
class TransferResult:
    seed: int
    size: int
    received: int
    intact: bool
    """Every byte arrived, in order, unchanged (SHA-256 compared)."""
    client_closed_cleanly: bool
    server_closed_cleanly: bool
    finish_time: float
    """Virtual seconds until both connections were fully closed (or gave up)."""
    data_time: float
    """Virtual seconds until the server had read the last byte."""
    client_error: BaseException | None = None
    server_error: BaseException | None = None
    client_stats: dict[str, int] = field(default_factory=dict)
    server_stats: dict[str, int] = field(default_factory=dict)
    srtt: float | None = None
    link_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, dict] = field(default_factory=dict)
    """With Config.track_limits or qlog_dir: "client"/"server" -> the
    connection's final info (gannet.observe), limited times included."""
    security_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    """Encrypted runs: "client"/"server" -> the SecureEndpoint's counters
    (sealed, opened, dropped unauthenticated...). Empty in clear."""

    @property
    def encrypted(self) -> bool:
        return bool(self.security_stats)

    @property
    def ok(self) -> bool:
        return self.intact and self.client_closed_cleanly and self.server_closed_cleanly

    @property
    def goodput(self) -> float:
        """Bytes per virtual second until the data was all read."""
        return self.received / self.data_time if self.data_time > 0 else 0.0


def encrypted_pair(has_aes: bool = False) -> tuple[Security, Security]:
    """(client, server) settings for an encrypted simulated transfer: the
    server gets an identity key made for the run (never the user's: the
    simulator reads no files), which the client pins, as `--peer-key`
    does. `has_aes`: both ends claim AES instructions (AES-128-GCM), else
    ChaCha20-Poly1305."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    static = X25519PrivateKey.generate()
    server_key = static.public_key().public_bytes_raw()
    return (Security(server_key=server_key, has_aes=has_aes),
            Security(static=static, has_aes=has_aes))


def run_transfer(
    seed: int,
    size: int,
    forward: LinkConfig | None = None,
    backward: LinkConfig | None = None,
    config: Config | None = None,
    server_config: Config | None = None,
    time_limit: float = 900.0,
    data: bytes | None = None,
    chunk: int = 256 * 1024,
    isn: tuple[int, int] | None = None,
    tap: Callable[[float, object], None] | None = None,
    security: tuple[Security, Security] | None = None,
) -> TransferResult:
    """Run one transfer of `size` pseudo-random bytes and report what happened.

    `tap(now, item)` is given, in order, every (datagram, address) the two
    endpoints emit and every event they report (the differential test's
    record of a run). `security`: (client, server) settings of two
    SecureEndpoints (see `encrypted_pair`); None: plain endpoints, in clear."""
    forward = forward or LinkConfig()
    backward = backward or forward
    config = config or Config()
    sim = Simulator(seed=seed)
    sim.set_link(CLIENT_ADDR, SERVER_ADDR, forward)
    sim.set_link(SERVER_ADDR, CLIENT_ADDR, backward)
    if security is None:
        client = Endpoint(config, rng=sim.make_rng("client"))
        server = Endpoint(server_config or config, rng=sim.make_rng("server"))
    else:
        client = SecureEndpoint(config, sim.make_rng("client"), security=security[0])
        server = SecureEndpoint(server_config or config, sim.make_rng("server"), security=security[1])
    if isn is not None:
        client.isn_source = lambda: isn[0]
        server.isn_source = lambda: isn[1]
    if data is None:
        data = random.Random(seed).randbytes(size)
    size = len(data)
    digest = hashlib.sha256()
    state: dict[str, Any] = {"sent": 0, "received": 0, "data_time": 0.0, "server_conn": None}
    errors: dict[str, BaseException | None] = {}
    closed: set[str] = set()

    def pump(conn):
        while state["sent"] < size:
            n = conn.send(memoryview(data)[state["sent"] : state["sent"] + chunk])
            if not n:
                return
            state["sent"] += n
        conn.close(sim.now)

    def on_events(ep: Endpoint, role: str) -> None:
        while (ev := ep.next_event()) is not None:
            if tap is not None:
                tap(sim.now, ev)
            conn = ev.conn
            if isinstance(ev, ConnectionEstablished) and role == "client":
                pump(conn)
            elif isinstance(ev, SendSpaceAvailable) and role == "client":
                pump(conn)
            elif isinstance(ev, ConnectionAvailable):
                state["server_conn"] = ep.accept()
            elif isinstance(ev, (DataReceived, StreamEnded)) and role == "server":
                while chunk_ := conn.recv(1 << 20):
                    digest.update(chunk_)
                    state["received"] += len(chunk_)
                if conn.eof:
                    state["data_time"] = sim.now
                    conn.close(sim.now)
            elif isinstance(ev, ConnectionTerminated):
                errors[role] = ev.error
                closed.add(role)

    observers = {}
    from .. import observe  # (gannet demo --qlog/--pcap set these for the process)

    for ep, role, addr in ((client, "client", CLIENT_ADDR), (server, "server", SERVER_ADDR)):
        qlog_dir = ep.config.qlog_dir or observe.settings.qlog_dir
        pcap_path = observe.settings.pcap_path
        node: Node = ep
        if qlog_dir or pcap_path or ep.config.track_limits:
            from ..observe import pcap
            from ..observe.trace import EndpointObserver

            # Virtual time: the traces and the capture start at 0 s. The
            # simulator drives the observer, which calls the endpoint.
            node = observers[role] = EndpointObserver(
                ep, qlog_dir=qlog_dir, wall_offset=0.0, local_addr=addr, install=False,
                pcap=pcap.open_shared(pcap_path) if pcap_path and role == "client" else None)
        sim.add_node(addr, node, name=role, drain=_reacting(ep, node, role, on_events, tap))
    server.listen()
    conn = client.connect(SERVER_ADDR, sim.now)
    end = sim.run(until=time_limit, stop=lambda: len(closed) == 2)
    info = {}
    for role, observer in observers.items():
        observer.close(sim.now)
        if observer.finished:
            info[role] = observer.finished[0]
    server_conn = state["server_conn"]
    return TransferResult(
        seed=seed,
        size=size,
        received=state["received"],
        intact=state["received"] == size and digest.digest() == hashlib.sha256(data).digest(),
        client_closed_cleanly="client" in closed and errors.get("client") is None,
        server_closed_cleanly="server" in closed and errors.get("server") is None,
        finish_time=end,
        data_time=state["data_time"] or end,
        client_error=errors.get("client"),
        server_error=errors.get("server"),
        client_stats=conn.stats.as_dict(),
        server_stats=server_conn.stats.as_dict() if server_conn else {},
        srtt=conn.srtt,
        link_stats={f"{s}->{d}": st.as_dict() for (s, d), st in sim.stats().items()},
        info=info,
        security_stats={role: asdict(ep.security_stats)
                        for role, ep in (("client", client), ("server", server))
                        if isinstance(ep, SecureEndpoint)},
    )


def _reacting(ep: Endpoint, node: Node, role: str, handler: Callable[[Endpoint, str], None],
              tap: Callable[[float, object], None] | None) -> Callable[[float], list]:
    """How the simulator takes `node`'s output (Simulator.add_node's
    `drain`): the scenario reacts to the endpoint's events first, and again
    after each pass while its reactions queue more."""

    def drain(now: float) -> list:
        handler(ep, role)
        out = list(node.datagrams_to_send(now))
        while ep.has_pending():  # reactions may queue more output
            handler(ep, role)
            out.extend(node.datagrams_to_send(now))
        if tap is not None:
            for item in out:
                tap(now, item)
        return out

    return drain
