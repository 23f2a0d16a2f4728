"""An Endpoint whose connections are encrypted and authenticated, sans-I/O.

`SecureEndpoint` is `gannet.core.endpoint.Endpoint` with the security
layer at its datagram boundary, and nothing changed inside the connection:

- The client's SYN carries Noise message 1 (option 64), the server's
  SYN-ACK message 2 (gannet.crypto.handshake). The server's keys are ready
  when it answers the SYN; the client's when the SYN-ACK verifies (and the
  server's key passed the pin or trust-on-first-use check). The SYN-ACK
  then reaches the connection, whose ACK leaves sealed: the three-way
  handshake is the key exchange, and encryption adds no round trip.
- From then on every datagram of the connection leaves sealed
  (gannet.wire.protected): the plaintext datagram less its CRC, encrypted
  under the direction's key with the packet number in the nonce. A GSO
  train is sealed row by row into a train of rows OVERHEAD bytes longer.
- Arriving sealed datagrams are opened and handed to the plain endpoint
  as authenticated: the tag already vouched for every byte, so the
  decoders and the GRO batch path skip the CRC32C, whose trailer is left
  unwritten (it is computed only for an observer, which parses them). A
  GRO batch is opened row by row into one plaintext batch, so the
  in-order run path keeps working.
- A plaintext segment for a connection that has keys - data, ACK, FIN,
  RST, window update - is dropped and counted, whatever its numbers: only
  the handshake's SYN, SYN-ACK (for a client still waiting for it) and a
  RST answering our SYN travel in clear.
- The connection sees datagrams OVERHEAD bytes smaller than the path
  carries (its `max_datagram_size` and `pmtud_max` are lowered by that),
  so a sealed datagram is exactly as large as the plaintext one would be.
- An observer (gannet.observe) sees the wire at the boundary; its qlog is
  given the plaintext side by `plaintext_observer`: each output pass before
  it is sealed, each opened datagram or batch before the plain endpoint
  reads it.

- Stateless reset (RFC 9000 section 10.3 is the model): a side with a
  lasting secret (its identity, or a PSK) gives its peer a token derived
  from that secret and its connection ID - a server inside the encrypted
  SYN-ACK, a client in a sealed control segment after it. Restarted, it
  answers a sealed datagram for a connection it does not know with a
  RESET_SIZE datagram ending in that token, and the peer, which alone can
  check it, ends the connection at once ("peer reset") instead of timing
  out. Resets are paced like RSTs and alerts, and never answer a datagram
  of reset size or less.
- Control segments (gannet.wire.protected.encode_control): the security
  layer's own sealed messages, which no connection sees - a path
  challenge, its response, a client's reset token. A challenge is sent
  again each RTO until answered (from the output pass), so what rides
  with it arrives.
- A peer that moves (RFC 9000 section 9): a connection's datagram that
  opened (no replay) from another address draws a path challenge there; the peer is moved when the response comes, one
  validation at a time per connection, paced. A plaintext datagram never
  moves a connection (the core drops it).

With `Security(insecure=True)` nothing is sealed, but an encrypted peer's
SYN is refused with an alert that tells it why, and an alert from an
encrypted peer fails our SYN with the reason: the two never hang. Such an
endpoint is an `InsecureEndpoint`, which overrides only the two receive
calls, and only for datagrams that are not of the short form.

Per-datagram cost: this module is compiled with the core (gannet/_build.py),
so both classes are native subclasses of the compiled `Endpoint`: the
core's calls to their overrides, and the adapter's calls into them, are
native calls through the class's method table, not Python method lookups.
Their calls to the plain endpoint's own methods (`Endpoint.receive_batch(
self, ...)`) are direct calls. One datagram is sealed and opened by one
call of the rows primitive each (`Sealer.seal_datagram`,
`Opener.open_datagram`).

A native instance takes no attributes beyond its class's, so an observer
(gannet.observe), which puts its wrappers on the instance, needs an
instance of a Python subclass (`gannet.observe.trace.observable`): the I/O
adapter makes its endpoint of one when its observer records packets (a
qlog, a pcap), and only then do the core's calls to the endpoint go
through Python (to find the wrappers); the limit accounting alone (the
stats socket of Gannet's commands) is called by the adapter's pass and
leaves the endpoint native. Both classes allow such subclasses.
"""

from __future__ import annotations

import hmac
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import MethodType
from typing import TYPE_CHECKING, Any, Final

from mypy_extensions import mypyc_attr

from ..wire.checksum import crc32c
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..config import Config
from ..core.connection import RUN_BYTES, Connection
from ..core.endpoint import SYN_ADMIT, Endpoint
from ..core.states import SYNCHRONIZED, State
from ..wire.batch import Train
from ..wire.datagram import SHORT_FORM, TRAILER_SIZE, VERSION, WireError, decode, encode, short_form
from ..wire.protected import (
    ALERT,
    ALERT_ENCRYPTION_REQUIRED,
    ALERT_HANDSHAKE_FAILED,
    ALERT_MALFORMED,
    ALERT_MODE_MISMATCH,
    ALERT_PEER_INSECURE,
    HEADER,
    HEADER_SIZE,
    OPT_KEY_EXCHANGE,
    OPT_PATH_CHALLENGE,
    OPT_PATH_RESPONSE,
    OPT_RESET_TOKEN,
    OVERHEAD,
    PATH_DATA_SIZE,
    PROTECTED,
    RESET_FILLER,
    RESET_SIZE,
    RESET_TOKEN_SIZE,
    decode_alert,
    encode_alert,
    encode_control,
    encode_reset,
    is_control,
    parse_header,
    restore_inner,
)
from ..wire.segment import ACK, RST, SYN, Segment
from .handshake import (
    MODE_NAMES,
    ClientHandshake,
    HandshakeError,
    Mode,
    ServerHandshake,
    _peer_failed_message,
    start_code_exchange,
)
from .noise import hkdf
from .refused import HandshakeFailed, HandshakeRefused
from .protection import (
    NATIVE_ROW_MAX,
    NATIVE_ROWS,
    STOP_END,
    STOP_OTHER,
    STOP_TAG,
    UPDATE_INTERVAL,
    Opener,
    ProtectionError,
    Sealer,
    seal_train,
)

if TYPE_CHECKING:
    from ..observe.trace import EndpointObserver

_SYN_ACK = SYN | ACK
# The envelope's header, read per datagram: bound once (compiled, a Final is
# a C static; HEADER is a name of an interpreted module, a lookup per use).
_unpack_header: Final = HEADER.unpack_from


@dataclass(frozen=True)
class Security:
    """How an endpoint's connections are protected and who the peer is.

    `static`: this side's identity key pair (a server's; made for the
    endpoint when None, as a code or PSK server needs no lasting one).
    `psk` / `code`: the secret both sides share (at most one).
    `server_key`: a client's pin for the server's key, or
    `server_key_sha256` for its SHA-256 (a pinned fingerprint); else
    `verify_server(addr, key, server_name)`, which raises HandshakeError to
    refuse (the trust-on-first-use check against known_hosts;
    `server_name` is the host the application named in `connect`, or
    None); neither: any key.
    """

    insecure: bool = False
    static: X25519PrivateKey | None = None
    psk: bytes | None = None
    code: str | None = None
    server_key: bytes | None = None
    server_key_sha256: bytes | None = None
    verify_server: Callable[[object, bytes, str | None], None] | None = None
    has_aes: bool = False  # the adapter says (io.security); ChaCha20-Poly1305 when unknown
    update_interval: int = UPDATE_INTERVAL

    def __post_init__(self) -> None:
        if self.psk is not None and self.code is not None:
            raise ValueError("a PSK and a code cannot both be used")


@dataclass(slots=True)
class SecurityStats:
    """What the security layer did with datagrams and handshakes (counts)."""

    sealed: int = 0
    opened: int = 0
    unauthenticated_dropped: int = 0
    """Sealed datagrams that did not open (forged, altered, wrong key)."""
    replay_dropped: int = 0
    plaintext_dropped: int = 0
    """Plaintext segments for connections that have keys (forged RST, FIN,
    ACK, data...), and plaintext where only sealed datagrams may come."""
    unknown_sealed: int = 0
    """Sealed datagrams for connection IDs that have no keys here."""
    handshakes_failed: int = 0
    alerts_sent: int = 0
    alerts_rate_limited: int = 0
    alerts_ignored: int = 0
    resets_sent: int = 0
    """Stateless resets sent for sealed datagrams of unknown connections."""
    resets_rate_limited: int = 0
    resets_received: int = 0
    """Stateless resets whose token verified: each ended a connection."""
    resets_forged: int = 0
    """Reset-sized sealed datagrams whose token did not verify (forged, or
    for a connection this side has no token of): dropped."""
    reset_tokens_received: int = 0
    """Peers' stateless reset tokens taken from control segments (a
    client's; a server's rides in its SYN-ACK)."""
    path_challenges_sent: int = 0
    """Path challenges sent (first ones and retransmissions): for a peer's
    new address, or carrying this side's reset token."""
    path_challenges_limited: int = 0
    """Authenticated datagrams from a new address that started no
    validation: one was under way for another (per connection, one at a
    time), or the answer bucket was empty."""
    path_responses_sent: int = 0
    path_responses_ignored: int = 0
    """Path responses that answered no outstanding challenge (late, or
    for a challenge given up)."""
    path_validations_failed: int = 0
    """Challenges given up unanswered after CHALLENGE_TRIES: the address
    (or the token) was not confirmed; the peer stays where it was."""
    migrations: int = 0
    """Connections whose peer moved to a validated new address."""


PEER_RESET_MESSAGE = "peer reset: it no longer has this connection"

# A path challenge is sent again after the connection's RTO while it is not
# answered, at most this many times in all (RFC 9000 section 8.2.4 gives a
# validation about three PTOs; a challenge that also carries a reset token
# is worth a few more tries, and costs one small datagram each).
CHALLENGE_TRIES = 6


def reset_key(security: Security) -> bytes | None:
    """The key this side's stateless reset tokens are made with: from a
    secret that outlives the process (the identity key it was given, or the
    PSK), so that a restarted endpoint makes the same tokens. None without
    one (a code, or an identity made for the endpoint): no tokens, no
    resets."""
    if security.static is not None:
        # (private_bytes_raw, not private_bytes(Encoding.Raw, ...): importing
        # cryptography's serialization loads its SSH, RSA, DSA and EC modules,
        # about 5 ms of a client's start before its SYN)
        secret = security.static.private_bytes_raw()
    elif security.psk is not None:
        secret = security.psk
    else:
        return None
    return hkdf(secret, b"gannet stateless reset", 1)[0]


def reset_token(key: bytes, cid: int, listening: bool = True) -> bytes:
    """The stateless reset token of connection ID `cid` (RFC 9000 section
    10.3.2: a keyed hash of the ID under a static key), made by an endpoint
    that listens or one that does not. The two make different tokens under
    one key: one user's client and server share an identity, and otherwise
    either would be a reset oracle for the other's connections (RFC 9000
    section 21.11): an attacker who names a server's connection ID in a
    datagram to a client of the same user would get from it the very reset
    that ends the server's connection."""
    role = b"L" if listening else b"C"
    return hmac.digest(key, role + cid.to_bytes(4, "big"), "sha256")[:RESET_TOKEN_SIZE]


class _Challenge:
    """A path challenge waiting for its response: its `data`, the address
    `addr` it went to (the path it validates), when it was last sent (or
    made, before its first sending) and how many times. Until a challenge is answered, every challenge a side
    sends that owes its peer a reset token carries it (`token`)."""

    __slots__ = ("data", "addr", "sent", "tries", "token")

    def __init__(self, data: bytes, addr: object, token: bool) -> None:
        self.data = data
        self.addr = addr
        self.sent = 0.0
        self.tries = 0
        self.token = token


class _Session:
    """The security state of one connection.

    A client has its own hello (`client`); a server the hello it answered
    (`server`, `peer_hello`, `reply`). A simultaneous open can give one
    connection both, and so two Noise sessions (`keys`, by the hello that
    started each): both sides then use the one whose hello is the larger,
    and a side that has only one uses that one (docs/security.md).
    `chosen` is the pair sealing and opening once that is decided."""

    __slots__ = ("client", "server", "peer_hello", "reply", "keys", "chosen", "peer_cid",
                 "synack", "confirmed", "mode", "server_name", "peer_reset_token", "owes_token",
                 "challenge")

    def __init__(self, mode: Mode) -> None:
        self.client: ClientHandshake | None = None
        self.server: ServerHandshake | None = None
        self.peer_hello = b""
        self.reply = b""  # our message 2, for our SYN-ACK
        self.keys: dict[bytes, tuple[Sealer, Opener]] = {}
        self.chosen: tuple[Sealer, Opener] | None = None
        self.peer_cid = 0
        self.synack = b""  # the peer's SYN-ACK key exchange that verified
        self.confirmed = False  # the peer is authenticated (no alert is taken after this)
        self.mode = mode
        self.server_name: str | None = None  # the host a client's application named
        self.peer_reset_token = b""  # the peer's stateless reset token, if it gave one
        # This side has a reset token to give that the peer has not yet
        # confirmed having (a client's: a server's rode in its SYN-ACK).
        self.owes_token = False
        self.challenge: _Challenge | None = None  # the outstanding path challenge

    @property
    def sealer(self) -> Sealer | None:
        return self.chosen[0] if self.chosen is not None else None

    @property
    def waiting_for_reply(self) -> bool:
        return self.client is not None and self.client.result is None

    def add_keys(self, hello: bytes, result, update_interval: int) -> None:
        self.keys[hello] = (Sealer(result.send_secret, result.aead, update_interval=update_interval),
                            Opener(result.recv_secret, result.aead))

    def decide(self) -> None:
        self.chosen = self.keys[max(self.keys)]


def _with_overhead(config: Config) -> Config:
    """The connection's view of sizes: OVERHEAD less than the path's."""
    return replace(config, max_datagram_size=config.max_datagram_size - OVERHEAD,
                   pmtud_max=config.pmtud_max - OVERHEAD,
                   datagram_overhead=config.datagram_overhead + OVERHEAD)


def _key_exchange_option(options: tuple[tuple[int, bytes], ...]) -> bytes | None:
    for kind, value in options:
        if kind == OPT_KEY_EXCHANGE:
            return value
    return None


_ALERT_MESSAGES = {
    ALERT_ENCRYPTION_REQUIRED: "the peer requires encryption and this side runs with --insecure",
    ALERT_PEER_INSECURE: "the peer runs without encryption (--insecure); refusing to talk in clear",
    ALERT_MALFORMED: "the peer could not read this side's key exchange",
}


# Compiled (gannet/_build.py), a native subclass of the compiled Endpoint;
# Python subclasses are allowed for an observer (see the module docstring).
@mypyc_attr(allow_interpreted_subclasses=True)
class SecureEndpoint(Endpoint):
    # Slots, for the pure build (compiled, the class is native whatever it
    # says): there the plain endpoint's attributes and these would make an
    # instance dict of more than 30 keys, which stops sharing its keys, and
    # every attribute read of the endpoint, the core's too, would be slower.
    __slots__ = ("security", "security_stats", "_sessions", "_closing", "_static", "_batch_buf",
                 "_one_buf", "_one_view", "_observer", "_reset_key", "_reserved_cid",
                 "_code_started", "prepare_due", "_challenges")

    def __new__(cls, config: Config | None = None, rng: random.Random | None = None, *,
                security: Security | None = None) -> SecureEndpoint:
        # With Security(insecure=True): an InsecureEndpoint (see there).
        # (Made by Python callers only: the compiled build's own constructor
        # call would not run __init__ on an object of another class.)
        if cls is SecureEndpoint and security is not None and security.insecure:
            return InsecureEndpoint.__new__(InsecureEndpoint, config, rng, security=security)
        return super().__new__(cls)

    def __init__(self, config: Config | None = None, rng: random.Random | None = None, *,
                 security: Security | None = None) -> None:
        self.security = security or Security()
        if self.security.insecure != isinstance(self, InsecureEndpoint):
            # (a subclass chooses its base by the Security it will be given)
            raise TypeError("Security(insecure=True) needs an InsecureEndpoint, and only it")
        config = config or Config()
        super().__init__(config if self.security.insecure else _with_overhead(config), rng)
        self.security_stats = SecurityStats()
        self._sessions: dict[int, _Session] = {}  # by local connection ID
        # Sessions of connections that closed during this output pass: their
        # last datagrams (a RST after abort, the final ACK) are still sealed.
        self._closing: dict[int, _Session] = {}
        self._static = self.security.static
        # Where datagrams are opened: a GRO batch, and one datagram. Reused,
        # as the adapter reuses its receive buffer: the plain endpoint copies
        # what it keeps (a fresh buffer would be 64 KB zeroed per batch).
        self._batch_buf = bytearray(0)
        self._one_buf = bytearray(0)
        self._one_view = memoryview(self._one_buf)
        # An observer (gannet.observe) that logs the plaintext side of the
        # envelope: the inner datagrams given to and taken from the plain
        # endpoint. None: nothing is done for it but one check per call.
        self._observer: EndpointObserver | None = None
        # Runs leave sealed (only established connections send them), so
        # their CRC trailers go unwritten unless that observer reads them.
        self.run_trailers = self.security.insecure
        self._reset_key = None if self.security.insecure else reset_key(self.security)
        # The connection ID the next passive connection takes: drawn before
        # the core admits it, so that the SYN-ACK's reset token names it.
        self._reserved_cid = 0
        # A listener's half of the next code exchange, started while it
        # waited (prepare), so that a SYN is answered without that work.
        self._code_started: tuple[Any, bytes] | None = None
        self.prepare_due = False
        # Sessions with a path challenge outstanding, by local connection
        # ID: each output pass sends again the ones whose time has come.
        self._challenges: dict[int, _Session] = {}
        """Whether `prepare` has work to do (the I/O layer calls it soon)."""

    def listen(self, backlog: int | None = None) -> None:
        super().listen(backlog)
        self.prepare_due = self.security.code is not None and self._code_started is None

    def prepare(self) -> None:
        """Do ahead the work of the next hello that needs nothing from the
        client: with a code, start this side's half of the exchange (its
        SPAKE2 message; the first also imports spake2), and make the
        endpoint's static key if it was given none (a code server's: the
        first hello would otherwise wait for it, and for cryptography's
        OpenSSL backend module that making the first X25519 key loads, about
        5 ms). The I/O layer calls this when nothing waits: after the pass
        that sent a SYN-ACK, and once listening. Each started exchange
        answers one hello."""
        self.prepare_due = False
        code = self.security.code
        if code is not None and self._code_started is None and self._listening:
            if self._static is None:
                self._static = X25519PrivateKey.generate()
            self._code_started = start_code_exchange(code)

    @property
    def datagram_overhead(self) -> int:
        """Bytes the envelope adds to each of a connection's datagrams."""
        return OVERHEAD

    @property
    def plaintext_observer(self) -> EndpointObserver | None:
        return self._observer

    @plaintext_observer.setter
    def plaintext_observer(self, observer: EndpointObserver | None) -> None:
        # Set once, by the observer: whether the output is sealed as it is
        # encoded (_encode_into) or after the observer has seen it
        # (datagrams_to_send), and so whether runs carry CRC trailers,
        # follows from it here rather than being asked on every pass.
        self._observer = observer
        self.run_trailers = self.security.insecure or observer is not None

    # ------------------------------------------------------------ application
    def connect(self, addr: object, now: float, config: Config | None = None, *,
                server_name: str | None = None) -> Connection:
        """`server_name`: the host as the application named it before it was
        resolved to `addr`, under which trust on first use pins the server's
        key beside its address (docs/security.md)."""
        if config is not None:
            config = _with_overhead(config)
        conn = super().connect(addr, now, config)
        if server_name is not None:
            self._client_session(conn.local_cid).server_name = server_name
        return conn

    # --------------------------------------------------------------- network
    def receive_datagram(self, data: bytes | bytearray | memoryview, addr: object, now: float) -> None:
        self.stats.datagrams_received += 1
        self._receive_secure(data, addr, now, False)

    def receive_batch(self, buf: bytes | bytearray | memoryview, seg: int, addr: object,
                      now: float, authenticated: bool = False) -> None:
        """The plain endpoint's, for datagrams off the wire. `authenticated`
        (datagrams something before this endpoint vouched for) changes
        nothing here: a sealed datagram is taken on its own tag's word only,
        and the handshake's and the alerts' are judged as any from the
        network."""
        if seg <= 0 or seg >= len(buf):
            self.stats.datagrams_received += 1
            if buf and buf[0] == PROTECTED:  # (_receive_secure's common case, without its dispatch)
                self._receive_sealed(buf, addr, now, True)
            else:
                self._receive_secure(buf, addr, now, True)
            return
        # Open every row into one plaintext batch of rows OVERHEAD smaller,
        # so the plain endpoint's run path takes it as it takes a GRO batch:
        # each row is decrypted into that buffer and given its CRC. Rows of
        # the common case open in one call (Opener.open_rows); any other row
        # is judged alone, by the path a single datagram takes.
        view = memoryview(buf)
        n = len(buf)
        inner_seg = seg - OVERHEAD
        if len(self._batch_buf) < n:
            self._batch_buf = bytearray(n)
        out = memoryview(self._batch_buf)
        pos = 0
        row = 0
        rows = -(-n // seg)
        sessions = self._sessions
        sstats = self.security_stats
        trailers = self._observer is not None  # (it parses what it logs; the core does not check)
        tail_opened = False  # the last row opened into the end of `out`
        # The connection whose rows `out` holds. A run is one connection's,
        # so each connection's rows go to the plain endpoint as a batch of
        # their own: a batch holding one row from each of several
        # connections (a tunnel's requests, one per client) is then a lone
        # datagram's path per row, parsed once, instead of a scan for runs
        # that cannot be there and each row parsed again after it.
        group = 0
        unpack_header = HEADER.unpack_from  # (bound once: it runs per row)
        word: int
        dst: int
        first: int
        while row < rows:
            off = row * seg
            if n - off > HEADER_SIZE:
                # The first byte and the destination ID in one call (a row
                # is often one connection's only one: this runs per row).
                word, dst = unpack_header(view, off)
                first = word >> 24
            else:
                first, dst = view[off], 0
            if first == PROTECTED and n - off > HEADER_SIZE:
                session = sessions.get(dst)
                if session is not None and session.chosen is not None:
                    if pos and dst != group:
                        self._deliver_batch(out[:pos], inner_seg, addr, now)  # (the core copies what it keeps)
                        pos = 0
                    group = dst
                    stop_row, pos, opened, stop = session.chosen[1].open_rows(view, seg, row, out, pos, dst,
                                                                              trailers)
                    if opened:
                        sstats.opened += opened
                        session.confirmed = True
                    if stop == STOP_END:
                        tail_opened = True
                        break
                    if stop == STOP_TAG:
                        self.stats.datagrams_received += 1
                        sstats.unauthenticated_dropped += 1
                        row = stop_row + 1
                        continue
                    if stop_row > row:
                        row = stop_row  # (a gap in the numbers: the next rows may open together again)
                        continue
            datagram = view[off : off + seg]
            if first != PROTECTED or len(datagram) <= RESET_SIZE:
                if pos:
                    self._deliver_batch(out[:pos], inner_seg, addr, now)  # (the core copies what it keeps)
                    pos = 0
                self.stats.datagrams_received += 1
                self._receive_secure(datagram, addr, now, False)
                row += 1
                continue
            opened_len = self._open(datagram, out[pos:])
            row += 1
            if opened_len is None:
                self.stats.datagrams_received += 1
                if self._reset_key is not None:
                    self._maybe_reset(datagram, addr, now)
                continue
            pos += opened_len
            tail_opened = row == rows
        if tail_opened and n % seg:
            # A control segment is shorter than the rows of a run, so GRO may
            # have added it to the end of one: it goes to the security layer,
            # not to the connection.
            tail = n % seg - OVERHEAD
            if is_control(out[pos - tail : pos]):
                pos -= tail
                control = bytes(out[pos : pos + tail])
                if pos:
                    self._deliver_batch(out[:pos], inner_seg, addr, now)
                self._on_control(control, addr, now)
                return
        if pos:
            self._deliver_batch(out[:pos], inner_seg, addr, now)

    def _deliver(self, data, addr: object, now: float, fast: bool) -> None:
        """Hand one plaintext datagram to the plain endpoint (and first to
        an observer's qlog, which must describe what the connection reads,
        not the envelope)."""
        observer = self._observer
        if observer is not None:
            observer.inner_received(data, addr, now)
        self._receive_one(data, addr, now, fast)

    def _deliver_batch(self, buf, seg: int, addr: object, now: float) -> None:
        """Hand an opened GRO batch to the plain endpoint's run path, which
        need not check CRC trailers that the tags made redundant (they are
        written only for an observer)."""
        observer = self._observer
        if observer is not None:
            observer.inner_batch_received(buf, seg, addr, now)
        Endpoint.receive_batch(self, buf, seg, addr, now, True)

    def _receive_sealed(self, data, addr: object, now: float, fast: bool) -> None:
        """One sealed datagram: its inner datagram to the plain endpoint
        (with room for a CRC trailer, written only for an observer: the
        plain endpoint takes the tag's word), else dropped and counted (or
        taken as a stateless reset). The common case - a connection with
        keys, the next packet numbers - is opened here by one call of the
        rows primitive; any other case by `_open`."""
        n = len(data)
        if n <= RESET_SIZE:
            self._on_stateless_reset(data, addr)
            return
        inner = None
        stop = STOP_OTHER
        # (Without the C primitive a small datagram takes `_open`, which is
        # fewer steps for one; a large one is still opened into a buffer.)
        if NATIVE_ROWS or n > NATIVE_ROW_MAX:
            dst: int = _unpack_header(data)[1]  # (one call, where a slice and int.from_bytes were two)
            session = self._sessions.get(dst)
            if session is not None and session.chosen is not None:
                size = n - OVERHEAD
                if len(self._one_buf) < size:
                    self._one_buf = bytearray(size)
                    self._one_view = memoryview(self._one_buf)
                stop = session.chosen[1].open_datagram(data, self._one_buf, dst, self._observer is not None)
                if stop == STOP_END:
                    self.security_stats.opened += 1
                    session.confirmed = True
                    inner = self._one_view[:size]
                elif stop == STOP_TAG:
                    self.security_stats.unauthenticated_dropped += 1
        if inner is None and stop == STOP_OTHER:
            inner = self._open(data)
        if inner is not None:
            if inner[1] == 0 and is_control(inner):  # (flags 0: no connection's segment has them)
                self._on_control(inner, addr, now)
                return
            observer = self._observer
            if observer is not None:  # (_deliver, inline: the hot path)
                observer.inner_received(inner, addr, now)
            self._receive_one(inner, addr, now, fast, True)  # (authenticated: its CRC is not checked)
        elif self._reset_key is not None:
            self._maybe_reset(data, addr, now)

    def _maybe_reset(self, data, addr: object, now: float) -> None:
        """Answer a sealed datagram (longer than a reset) for a connection
        this side does not know with a stateless reset: this side may have
        restarted and lost it, and its peer can check the token."""
        dst = int.from_bytes(data[4:8], "big")
        # (A server gave its token in its SYN-ACK, a client in a control
        # segment: either may have lost the connection.)
        if not dst or dst in self._sessions or dst in self._conns or dst in self._closing:
            return
        if not self._may_answer(now):  # the bucket that paces RSTs and alerts
            self.security_stats.resets_rate_limited += 1
            return
        # Never for an ID one of our connections has as its peer's: a peer
        # with the same identity (one user's client and server) makes the
        # same tokens, and an attacker who reflected that peer's datagram
        # back to us would get from us the reset that ends our connection.
        # (A scan, but at most `reset_rate` a second.)
        if any(conn.remote_cid == dst for conn in self._conns.values()):
            return
        assert self._reset_key is not None
        filler = self.rng.getrandbits(8 * RESET_FILLER).to_bytes(RESET_FILLER, "big")
        if type(self._out) is not list:
            self._out = []
        self._out.append((encode_reset(dst, reset_token(self._reset_key, dst, self._listening), filler), addr))
        self.security_stats.resets_sent += 1

    def _on_stateless_reset(self, data, addr: object) -> None:
        """A sealed datagram of reset size: a stateless reset if its last
        bytes are the token the peer at `addr` gave for the connection ID
        it names (its own), which then ends at once; else dropped and
        counted. Never answered."""
        head = parse_header(data)
        if head is None:
            self.stats.malformed_dropped += 1
            return
        conn = self._syn_index.get((addr, head[1]))
        session = self._sessions.get(conn.local_cid) if conn is not None else None
        token = session.peer_reset_token if session is not None else b""
        if not token or not hmac.compare_digest(bytes(data[-RESET_TOKEN_SIZE:]), token):
            self.security_stats.resets_forged += 1
            return
        assert conn is not None
        self.security_stats.resets_received += 1
        if conn.state == State.TIME_WAIT:
            # Both directions were finished and acknowledged: the peer forgot
            # a connection that was over, and a late duplicate of ours drew
            # this. Nothing is lost; TIME_WAIT ends by itself (RFC 1337 too
            # has TIME_WAIT ignore resets).
            return
        conn._terminate(ConnectionResetError(PEER_RESET_MESSAGE))

    # ------------------------------------------- control segments, migration
    def _on_control(self, inner, addr: object, now: float) -> None:
        """An opened control segment (authenticated: its peer sent it): a
        path challenge is answered on the path it came by, a path response
        completes our challenge, a reset token is kept. It moves no peer:
        only a connection's own datagrams do that (`_on_peer_address`), as
        QUIC's probing frames do not (RFC 9000 section 9.1)."""
        try:
            dst, src, seg = decode(inner, True)
        except WireError:
            self.stats.malformed_dropped += 1
            return
        conn = self._conns.get(dst)
        session = self._sessions.get(dst)
        if conn is None or session is None or src != conn.remote_cid:
            self.stats.spoofed_dropped += 1
            return
        challenge = response = None
        for kind, value in seg.unknown_options:
            if kind == OPT_PATH_CHALLENGE and len(value) == PATH_DATA_SIZE:
                challenge = value
            elif kind == OPT_PATH_RESPONSE and len(value) == PATH_DATA_SIZE:
                response = value
            elif kind == OPT_RESET_TOKEN and len(value) == RESET_TOKEN_SIZE:
                session.peer_reset_token = bytes(value)
                self.security_stats.reset_tokens_received += 1
        if challenge is not None:
            # Answered where it came from (RFC 9000 section 8.2.2): that is
            # the path the peer wants proved. Paced like every answer to an
            # address not yet proved.
            if self._may_answer(now):
                self._send_control(conn, session, addr, ((OPT_PATH_RESPONSE, challenge),))
                self.security_stats.path_responses_sent += 1
            else:
                self.security_stats.path_challenges_limited += 1
        if response is not None:
            pending = session.challenge
            if pending is None or not hmac.compare_digest(response, pending.data):
                self.security_stats.path_responses_ignored += 1
                return
            # The peer received what went to `pending.addr` (a response on any
            # path validates the path the challenge went by, RFC 9000 section
            # 8.2.3), and with it our token.
            session.challenge = None
            self._challenges.pop(conn.local_cid, None)
            if pending.token:
                session.owes_token = False
            if pending.addr != conn.remote_addr and conn.state in SYNCHRONIZED:
                self.move_peer(conn, pending.addr)
                self.security_stats.migrations += 1

    def _on_peer_address(self, conn: Connection, addr: object, now: float) -> None:
        """A datagram of `conn` that authenticated (the peer made it, and it
        is no replay) came from `addr`, not the peer's address: the
        peer may have moved (NAT rebinding), or someone on the path raced a
        copy of its datagram from elsewhere. The peer is moved only once a
        challenge sent to `addr` is answered (RFC 9000 section 9.3: an
        attacker cannot answer what it cannot read, and a copy's sender
        receives nothing at an address it only wrote on the datagram).
        One validation at a time per connection, a new one no sooner than
        the last one's RTO, each challenge paced by the answer bucket."""
        session = self._sessions.get(conn.local_cid)
        if session is None or session.sealer is None:
            return
        pending = session.challenge
        if pending is not None and now < pending.sent + conn.rtt.current_rto():
            if pending.addr != addr:
                self.security_stats.path_challenges_limited += 1
            return
        if pending is not None and pending.addr == addr:
            self._send_challenge(conn, session, pending, now)  # its time has come: again
            return
        self._challenge(conn, session, addr, now)

    def _challenge(self, conn: Connection, session: _Session, addr: object, now: float,
                   send: bool = True) -> None:
        """Start a path challenge to `addr` (replacing one outstanding):
        sent now, or (`send` False) by the output pass an RTO from now."""
        data = self.rng.getrandbits(8 * PATH_DATA_SIZE).to_bytes(PATH_DATA_SIZE, "big")
        pending = session.challenge = _Challenge(data, addr, session.owes_token)
        self._challenges[conn.local_cid] = session
        if send:
            self._send_challenge(conn, session, pending, now)
        else:
            pending.sent = now

    def _send_challenge(self, conn: Connection, session: _Session, pending: _Challenge, now: float) -> None:
        if pending.addr != conn.remote_addr and not self._may_answer(now):
            # (to an address not proved: paced like every such answer)
            self.security_stats.path_challenges_limited += 1
            pending.sent = now
            return
        options: tuple[tuple[int, bytes], ...] = ((OPT_PATH_CHALLENGE, pending.data),)
        if pending.token:
            assert self._reset_key is not None
            options += ((OPT_RESET_TOKEN, reset_token(self._reset_key, conn.local_cid, self._listening)),)
        self._send_control(conn, session, pending.addr, options)
        pending.sent = now
        pending.tries += 1
        self.security_stats.path_challenges_sent += 1

    def _challenges_due(self, now: float) -> None:
        """Send again the path challenges not answered within an RTO of
        their connection; give up after CHALLENGE_TRIES (the peer stays at
        its address; a token not confirmed may not have arrived)."""
        for cid, session in list(self._challenges.items()):
            conn = self._conns.get(cid)
            pending = session.challenge
            if conn is None or pending is None:
                del self._challenges[cid]
                continue
            if now < pending.sent + conn.rtt.current_rto():
                continue
            if pending.tries >= CHALLENGE_TRIES:
                del self._challenges[cid]
                session.challenge = None
                self.security_stats.path_validations_failed += 1
                continue
            self._send_challenge(conn, session, pending, now)

    def _send_control(self, conn: Connection, session: _Session, addr: object,
                      options: tuple[tuple[int, bytes], ...]) -> None:
        sealer = session.sealer
        if sealer is None:
            return
        if type(self._out) is not list:
            self._out = []
        self._out.append((self._seal(sealer, encode_control(conn.remote_cid, conn.local_cid, options)), addr))

    def _open(self, data: bytes | bytearray | memoryview, out: memoryview | None = None):
        """The inner datagram of a sealed datagram with its CRC trailer (for
        the plain endpoint's decoders) - or, with `out`, its length, written
        there - or None (counted) when it does not open."""
        head = parse_header(data)
        if head is None:
            self.stats.malformed_dropped += 1
            return None
        phase, dst, truncated = head
        session = self._sessions.get(dst)
        if session is None or not session.keys:
            self.security_stats.unknown_sealed += 1
            return None
        view = memoryview(data)
        header, body = view[:HEADER_SIZE], view[HEADER_SIZE:]
        candidates: tuple[tuple[Sealer, Opener], ...]
        if session.chosen is not None:
            candidates = (session.chosen,)
        else:  # a simultaneous open not yet decided: what opens decides
            candidates = tuple(session.keys.values())
        buf = memoryview(bytearray(len(data) - OVERHEAD) if out is None else out)
        error = None
        for pair in candidates:
            opener = pair[1]
            try:
                length = opener.open(header, opener.packet_number(truncated), phase, body, buf[HEADER_SIZE:])
            except ProtectionError as exc:
                error = exc
                continue
            assert isinstance(length, int)
            inner = restore_inner(buf, 0, length, dst)
            buf[inner : inner + TRAILER_SIZE] = crc32c(buf[:inner]).to_bytes(4, "little")
            if session.chosen is None:
                session.chosen = pair
            session.confirmed = True
            self.security_stats.opened += 1
            return inner + TRAILER_SIZE if out is not None else buf.obj
        if str(error) in ("replayed", "too old"):
            self.security_stats.replay_dropped += 1
        else:
            self.security_stats.unauthenticated_dropped += 1
        return None

    def _receive_secure(self, data: bytes | bytearray | memoryview, addr: object, now: float,
                        fast: bool) -> None:
        if not data:
            self.stats.malformed_dropped += 1
            return
        first = data[0]
        if first == ALERT:
            self._on_alert(data, now)
            return
        if first == PROTECTED:
            self._receive_sealed(data, addr, now, fast)
            return
        if first != VERSION:  # a plaintext short form, or not Gannet at all
            if first == SHORT_FORM:
                self.security_stats.plaintext_dropped += 1
            else:
                self.stats.malformed_dropped += 1
            return
        try:
            dst, src, seg = decode(data)
        except WireError:
            self.stats.malformed_dropped += 1
            return
        flags = seg.flags
        if flags & _SYN_ACK == SYN:
            self._on_hello_syn(data, dst, src, seg, addr, now)
            return
        session = self._sessions.get(dst)
        if session is not None and flags & _SYN_ACK == _SYN_ACK:
            option = _key_exchange_option(seg.unknown_options)
            if session.waiting_for_reply:
                self._on_syn_ack(data, dst, src, option, session, addr, now)
                return
            if option is not None and option == session.synack:
                # A retransmitted SYN-ACK (our ACK was lost): the key exchange
                # that verified, so the connection may answer it.
                self._deliver(data, addr, now, fast)
                return
        if session is not None and seg.retry_token is not None and session.waiting_for_reply:
            # A listener under pressure answered our SYN with a stateless
            # Retry (core/endpoint.py): our SYN goes again with its token and
            # the same hello. Nothing is protected yet; the core checks the
            # Retry acknowledges our SYN exactly and comes from where it went.
            self._deliver(data, addr, now, fast)
            return
        if session is not None and flags & RST and session.chosen is None and not session.keys:
            self._deliver(data, addr, now, fast)  # our SYN refused: nothing is protected yet
            return
        self.security_stats.plaintext_dropped += 1

    def _new_session(self) -> _Session:
        sec = self.security
        return _Session(Mode.CODE if sec.code is not None else Mode.PSK if sec.psk is not None
                        else Mode.IDENTITY)

    def _client_session(self, local_cid: int) -> _Session:
        session = self._sessions.get(local_cid)
        if session is None:
            session = self._sessions[local_cid] = self._new_session()
        if session.client is None:
            sec = self.security
            session.client = ClientHandshake(psk=sec.psk, code=sec.code,
                                             expected_server_key=sec.server_key,
                                             expected_server_key_sha256=sec.server_key_sha256,
                                             has_aes=sec.has_aes)
        return session

    def _answer(self, session: _Session, hello: bytes, src: int, addr: object, now: float,
                local_cid: int) -> bool:
        """Answer a peer's hello as the Noise responder, for our connection
        `local_cid` (whose stateless reset token the reply carries, when
        this side has a reset key); False (alert sent) when it cannot be
        answered."""
        sec = self.security
        if self._static is None:
            self._static = X25519PrivateKey.generate()
        started, self._code_started = self._code_started, None
        if sec.code is not None:
            self.prepare_due = True  # (the next hello's: after this one's SYN-ACK left)
        hs = ServerHandshake(self._static, psk=sec.psk, code=sec.code, has_aes=sec.has_aes,
                             started=started)
        token = reset_token(self._reset_key, local_cid, self._listening) if self._reset_key is not None else b""
        try:
            reply = hs.receive_hello(hello, token)
        except HandshakeError as exc:
            self.security_stats.handshakes_failed += 1
            if exc.reason == "mode-mismatch":
                self._alert(src, ALERT_MODE_MISMATCH, addr, now, int(hs.mode))
            else:
                self._alert(src, ALERT_MALFORMED, addr, now)
            return False
        assert hs.result is not None
        session.server, session.peer_hello, session.reply, session.peer_cid = hs, hello, reply, src
        session.add_keys(hello, hs.result, sec.update_interval)
        return True

    def _on_hello_syn(self, data, dst, src, seg, addr, now) -> None:
        if dst != 0 or not src:
            self.stats.malformed_dropped += 1
            return
        hello = _key_exchange_option(seg.unknown_options)
        if hello is None:
            self._alert(src, ALERT_ENCRYPTION_REQUIRED, addr, now)
            return
        existing = self._syn_index.get((addr, src))
        if existing is not None:
            session = self._sessions.get(existing.local_cid)
            if session is not None and session.peer_hello == hello:
                self._deliver(data, addr, now, False)  # a retransmitted SYN
            else:
                self.security_stats.plaintext_dropped += 1
            return
        pending = self._connecting.get(addr)
        if pending is not None and pending.state == State.SYN_SENT and not pending.remote_cid:
            # Simultaneous open: our SYN and the peer's crossed. Answer its
            # hello too; our SYN-ACK carries our hello and that answer.
            session = self._client_session(pending.local_cid)
            if self._answer(session, hello, src, addr, now, pending.local_cid):
                self._deliver(data, addr, now, False)
            return
        if not self._listening or self.syn_verdict(seg, src, addr, now) != SYN_ADMIT:
            # Refused, dropped or answered with a stateless Retry by the core:
            # no key exchange is spent on it (a flood of SYNs carrying hellos
            # costs no more than one of plain SYNs).
            self._deliver(data, addr, now, False)
            return
        session = self._new_session()
        # The connection's ID is drawn now, for the reset token in our reply;
        # the core's admission takes it (_allocate_cid).
        self._reserved_cid = cid = Endpoint._allocate_cid(self)
        try:
            if not self._answer(session, hello, src, addr, now, cid):
                return
            self._deliver(data, addr, now, False)
        finally:
            self._reserved_cid = 0
        conn = self._syn_index.get((addr, src))
        if conn is None:
            return  # not listening, or the backlog was full: the SYN was not taken
        assert conn.local_cid == cid
        session.chosen = session.keys[hello]  # a server's only session
        self._sessions[conn.local_cid] = session

    def _on_syn_ack(self, data, dst, src, option, session, addr, now) -> None:
        hs = session.client
        assert hs is not None
        if option is None or not option or len(option) < 1 + option[0]:
            self._fail(dst, "the server does not encrypt (it runs with --insecure, or is an older "
                       "Gannet); refusing to talk in clear")
            return
        n = option[0]
        peer_hello, reply = option[1 : 1 + n], option[1 + n :]
        try:
            hs.receive_reply(reply)
            assert hs.result is not None
            if self.security.verify_server is not None and self.security.server_key is None \
                    and self.security.server_key_sha256 is None:
                self.security.verify_server(addr, hs.result.server_key, session.server_name)
        except HandshakeError as exc:
            self._alert(src, ALERT_HANDSHAKE_FAILED, addr, now, int(hs.mode))
            self._fail(dst, str(exc))
            return
        session.add_keys(hs.hello(), hs.result, self.security.update_interval)
        # `peer_hello` is set only in a simultaneous open. If we answered it
        # too, both sessions are in `keys` and `decide` picks the larger; if
        # we never saw that SYN, the peer has only our session, as we do.
        assert not peer_hello or peer_hello == session.peer_hello or peer_hello not in session.keys
        session.peer_cid, session.synack = src, option
        session.peer_reset_token = hs.result.reset_token
        if session.chosen is None:
            session.decide()  # all we will know: the larger hello's session if we have both
        session.confirmed = True  # the peer proved its key (and the shared secret)
        self._deliver(data, addr, now, False)
        conn = self._conns.get(dst)
        if self._reset_key is not None and session.server is None and conn is not None \
                and conn.state in SYNCHRONIZED:
            # The server has no token of ours (a SYN travels in clear): give
            # it one, sealed, in a control segment that a path challenge
            # makes reliable - sent again until the server's response says
            # it arrived. Then a restarted client (the same identity or
            # PSK, at the same address) can reset the server's side. Not
            # at once but an RTO from now, by the output pass: a connection
            # over sooner (a request and its answer) never needed it, and
            # the handshake's flights stay one datagram each way.
            session.owes_token = True
            self._challenge(conn, session, addr, now, send=False)

    def _on_alert(self, data, now) -> None:
        alert = decode_alert(data)
        if alert is None:
            self.stats.malformed_dropped += 1
            return
        dst, code, detail = alert
        conn = self._conns.get(dst)
        session = self._sessions.get(dst)
        # Accepted only while the connection's handshake is not confirmed:
        # after that only sealed datagrams speak for the peer.
        in_handshake = conn is not None and (
            conn.state == State.SYN_SENT or (session is not None and not session.confirmed))
        if not in_handshake:
            self.security_stats.alerts_ignored += 1
            return
        if code == ALERT_MODE_MISMATCH:
            wanted = MODE_NAMES.get(Mode(detail), "another mode") if detail in Mode.__members__.values() \
                else "another mode"
            message = f"the server needs {wanted}"
        elif code == ALERT_HANDSHAKE_FAILED:
            mode = Mode(detail) if detail in Mode.__members__.values() else Mode.IDENTITY
            message = _peer_failed_message(mode)
        else:
            message = _ALERT_MESSAGES.get(code, f"refused by the peer's security layer (alert {code})")
        self._fail(dst, message)

    def _alert(self, dst_cid: int, code: int, addr: object, now: float, detail: int = 0) -> None:
        # Paced by the bucket that paces RSTs (a stream of SYNs from forged
        # addresses draws no stream of alerts), and queued where the plain
        # endpoint queues its resets, so an adapter that asks the endpoint
        # whether it has output (`_out`) sends it.
        if not self._may_answer(now):
            self.security_stats.alerts_rate_limited += 1
            return
        if type(self._out) is not list:
            self._out = []
        self._out.append((encode_alert(dst_cid, code, detail), addr))
        self.security_stats.alerts_sent += 1

    def _fail(self, local_cid: int, message: str) -> None:
        self.security_stats.handshakes_failed += 1
        conn = self._conns.get(local_cid)
        if conn is not None:
            error = HandshakeFailed(message)
            conn._terminate(error)  # no RST: the peer was told by an alert
            if conn.passive:
                self._events.append(HandshakeRefused(conn, conn.remote_addr, error))

    def datagram_too_big(self, data: bytes | bytearray | memoryview, addr: object) -> bool:
        if data and data[0] == PROTECTED and len(data) > OVERHEAD:
            data = memoryview(data)[: len(data) - OVERHEAD]  # the size the connection chose
        return super().datagram_too_big(data, addr)

    def datagrams_to_send(self, now: float,
                          trains: bool = False) -> list[tuple[bytes | bytearray, object]]:
        # A connection's datagrams are sealed as they are encoded
        # (_encode_into), where its keys are at hand; this pass takes the
        # rest - the handshake's, resets, alerts and control segments - and,
        # when an observer logs the plaintext side, all of them after it has
        # seen them.
        if self._challenges:
            self._challenges_due(now)
        out = Endpoint.datagrams_to_send(self, now, trains)
        if out:
            observer = self._observer
            if observer is not None:
                observer.inner_sent(out, now)  # before sealing: the trains are released then
            for item, _ in out:
                if item[0] != PROTECTED:
                    out = self._seal_pass(out)
                    break
        if self._closing:
            self._closing = {}
        return out

    def _seal_pass(self, out: list) -> list:
        """`out` with what _encode_into did not seal sealed (or given the
        handshake's key exchange)."""
        sealed = []
        for item, addr in out:
            if item[0] == PROTECTED:
                sealed.append((item, addr))  # sealed in _encode_into
            elif type(item) is Train:
                session = self._session_to(addr, int.from_bytes(item[4:8], "big"))
                if session is None or session.sealer is None:
                    sealed.append((item, addr))  # cannot happen: runs are only sent once established
                else:
                    sealed.extend((train, addr) for train in self._seal_train(item, session.sealer))
            else:
                sealed.append(self._seal_item(item, addr))
        return sealed

    def _encode_into(self, conn: Connection, segs: list, out: list, trains: bool) -> int:
        """The plain encoding, then sealed under `conn`'s keys (all but a
        SYN-ACK sent again, whose key exchange datagrams_to_send adds)."""
        session = self._sessions.get(conn.local_cid)
        if session is None or session.chosen is None or self.run_trailers:
            # no keys yet: the handshake's datagrams; or an observer first
            # (datagrams_to_send's pass seals)
            return Endpoint._encode_into(self, conn, segs, out, trains)
        sealer = session.chosen[0]
        if len(segs) == 1:
            first = segs[0]
            one: Segment | None = first if type(first) is Segment else None
            tsval = one.tsval if one is not None else None
            if one is not None and tsval is not None and short_form(conn.remote_cid, one):
                # One segment of the short form (a message, a reply, an
                # ACK): sealed from its fields, the bytes encode and
                # seal_datagram would give, without the plaintext datagram
                # and its CRC, which the tag replaces.
                self.security_stats.sealed += 1
                out.append((sealer.seal_short(conn.remote_cid, one.flags, one.seq, one.ack, one.wnd, tsval,
                                              one.payload), conn.remote_addr))
                return 1
        elif len(segs) > 1:
            # A segment at a time, each sealed as soon as it is encoded: the
            # plaintext train is sealed while it is still in the cache and
            # goes back to the pool at once, so a pass of many runs (with
            # path MTU discovery, one 64 KB datagram each) needs one
            # plaintext train, not one per run beside the sealed ones (the
            # pool's bytes would go to plaintext trains and every sealed
            # train would be a fresh, zeroed buffer).
            sent = 0
            for seg in segs:
                sent += self._encode_into(conn, [seg], out, trains)
            return sent
        start = len(out)
        sent = Endpoint._encode_into(self, conn, segs, out, trains)
        if len(out) == start + 1:
            item, addr = out[start]  # one datagram (a small message, an ACK) or one run: no list to rebuild
            if type(item) is not Train:
                if item[0] == SHORT_FORM:  # (no SYN-ACK to leave for the pass: _seal_encoded's one step)
                    self.security_stats.sealed += 1
                    out[start] = (sealer.seal_datagram(item, conn.remote_cid), addr)
                else:
                    out[start] = (self._seal_encoded(sealer, item, conn.remote_cid), addr)
                return sent
            sealed = self._seal_train(item, sealer)  # one run (a bulk sender's common case)
            out[start] = (sealed[0], addr)
            for train in sealed[1:]:
                out.append((train, addr))
            return sent
        items = out[start:]
        del out[start:]
        for item, addr in items:
            if type(item) is Train:
                out.extend((train, addr) for train in self._seal_train(item, sealer))
            else:
                out.append((self._seal_encoded(sealer, item, conn.remote_cid), addr))
        return sent

    def _seal_encoded(self, sealer: Sealer, item, dst: int):
        """A datagram _encode_into made for the peer's connection ID `dst`,
        sealed - but a SYN-ACK sent again, left for datagrams_to_send's
        pass, which adds its key exchange."""
        if item[0] == VERSION and item[1] & SYN:
            return item
        self.security_stats.sealed += 1
        return sealer.seal_datagram(item, dst)

    def _session_to(self, addr: object, peer_cid: int) -> _Session | None:
        """The session of the connection whose peer has `peer_cid` at `addr`."""
        conn = self._syn_index.get((addr, peer_cid))
        if conn is not None:
            return self._sessions.get(conn.local_cid)
        for session in self._closing.values():
            if session.peer_cid == peer_cid:
                return session
        return None

    def _seal_item(self, item, addr):
        first = item[0]
        if first == ALERT:
            return item, addr
        if first == SHORT_FORM:
            session = self._session_to(addr, int.from_bytes(item[4:8], "big"))
        else:
            src = int.from_bytes(item[8:12], "big")
            session = self._sessions.get(src) or self._closing.get(src)
            if item[1] & SYN:
                if item[1] & ACK:
                    if session is not None and session.reply:
                        return self._with_key_exchange(item, session, True), addr
                else:
                    session = self._client_session(src)
                    return self._with_key_exchange(item, session, False), addr
        if session is None or session.sealer is None:
            return item, addr  # a RST for an unknown connection, or before keys
        return self._seal(session.sealer, item), addr

    def _with_key_exchange(self, item: bytes, session: _Session, synack: bool) -> bytes:
        """The SYN (our hello) or SYN-ACK (the length of our hello if we sent
        one, it, and our answer to the peer's) with the key exchange added."""
        dst, src, seg = decode(item)
        assert src is not None  # (a SYN or SYN-ACK: the long form, which carries it)
        if synack:
            own = session.client.hello() if session.client is not None else b""
            message = bytes((len(own),)) + own + session.reply
        else:
            assert session.client is not None
            message = session.client.hello()
        seg.unknown_options = seg.unknown_options + ((OPT_KEY_EXCHANGE, message),)
        return encode(dst, src, seg)

    def _seal(self, sealer: Sealer, datagram) -> bytes | bytearray:
        self.security_stats.sealed += 1
        return sealer.seal_datagram(datagram, int.from_bytes(datagram[4:8], "big"))

    def _seal_train(self, train: Train, sealer: Sealer) -> list[Train]:
        """A run's train sealed (protection.seal_train: as trains of rows
        OVERHEAD longer, none beyond RUN_BYTES), and counted."""
        self.security_stats.sealed += -(-len(train) // train.size)
        return seal_train(sealer, train, RUN_BYTES)

    # --------------------------------------------------------------- helpers
    def _allocate_cid(self) -> int:
        cid = self._reserved_cid
        if cid:  # drawn for the reset token of the SYN-ACK being answered
            self._reserved_cid = 0
            return cid
        return super()._allocate_cid()

    def _forget(self, conn: Connection) -> None:
        super()._forget(conn)
        self._challenges.pop(conn.local_cid, None)
        session = self._sessions.pop(conn.local_cid, None)
        if session is not None and session.sealer is not None:
            self._closing[conn.local_cid] = session


@mypyc_attr(allow_interpreted_subclasses=True)
class InsecureEndpoint(SecureEndpoint):
    """A SecureEndpoint with Security(insecure=True) (SecureEndpoint makes
    one of this class for it): the plain endpoint, nothing sealed, that
    still reads an encrypted peer's alert (which fails our SYN with its
    reason) and refuses an encrypted peer's SYN with one. Both are
    datagrams of the long form or an alert's, so a short-form datagram
    goes to the plain endpoint at once; every other method is the plain
    endpoint's own, called directly (a native call) by the overrides
    below, which undo SecureEndpoint's."""

    __slots__ = ()

    # A batch whose first byte is this `receive_batch` hands to the plain
    # endpoint's as it is (see `batch_passed_on`).
    PASSED_ON = SHORT_FORM

    def datagrams_to_send(self, now: float,
                          trains: bool = False) -> list[tuple[bytes | bytearray, object]]:
        return Endpoint.datagrams_to_send(self, now, trains)

    def _encode_into(self, conn: Connection, segs: list, out: list, trains: bool) -> int:
        return Endpoint._encode_into(self, conn, segs, out, trains)

    def datagram_too_big(self, data: bytes | bytearray | memoryview, addr: object) -> bool:
        return Endpoint.datagram_too_big(self, data, addr)

    def _allocate_cid(self) -> int:
        return Endpoint._allocate_cid(self)

    def _forget(self, conn: Connection) -> None:
        Endpoint._forget(self, conn)

    def _on_peer_address(self, conn: Connection, addr: object, now: float) -> None:
        Endpoint._on_peer_address(self, conn, addr, now)  # (never called: nothing is authenticated)

    @property
    def datagram_overhead(self) -> int:
        return 0

    def batch_passed_on(self) -> Callable[..., None] | None:
        """The plain endpoint's `receive_batch`, bound, which `receive_batch`
        calls for a batch whose first byte is PASSED_ON and does nothing
        else: an I/O adapter may call it for such a batch directly, without
        this class's Python frame per batch (the plaintext bulk path). None
        when `receive_batch` is replaced on the instance (an observer's
        wrapper, which must see every batch)."""
        if "receive_batch" in getattr(self, "__dict__", ()):
            return None
        return MethodType(Endpoint.receive_batch, self)

    def connect(self, addr: object, now: float, config: Config | None = None, *,
                server_name: str | None = None) -> Connection:
        return Endpoint.connect(self, addr, now, config)  # (no key to pin under `server_name`)

    def receive_datagram(self, data: bytes | bytearray | memoryview, addr: object, now: float) -> None:
        if data and data[0] == SHORT_FORM or not self._screened(data, addr, now):
            Endpoint.receive_datagram(self, data, addr, now)

    def receive_batch(self, buf: bytes | bytearray | memoryview, seg: int, addr: object,
                      now: float, authenticated: bool = False) -> None:
        if buf and buf[0] == self.PASSED_ON:
            # short forms: no SYN, no alert (`authenticated` is the plain endpoint's to use)
            Endpoint.receive_batch(self, buf, seg, addr, now, authenticated)
            return
        if seg <= 0 or seg >= len(buf):
            self.receive_datagram(buf, addr, now)
            return
        for i in range(0, len(buf), seg):
            self.receive_datagram(buf[i : i + seg], addr, now)

    def _screened(self, data, addr: object, now: float) -> bool:
        """True when `data` was taken here (counted): an alert, an encrypted
        peer's SYN (refused with an alert), or nothing at all."""
        if data:
            first = data[0]
            if first == ALERT:
                self.stats.datagrams_received += 1
                self._on_alert(data, now)
                return True
            if first != VERSION or not data[1] & SYN or data[1] & ACK:
                return False
            try:
                _, src, seg = decode(data)
            except WireError:
                return False  # (the plain endpoint counts it)
            if not src or _key_exchange_option(seg.unknown_options) is None:
                return False
            self.stats.datagrams_received += 1
            self._alert(src, ALERT_PEER_INSECURE, addr, now)
            return True
        self.stats.datagrams_received += 1
        self.stats.malformed_dropped += 1
        return True
