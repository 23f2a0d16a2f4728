"""Every setting of a Gannet connection, in one documented object.

The names the seed projects used are kept recognizable: `mss` (MSS),
`window_size` (WINDOW_SIZE), `timeout` (TIMEOUT, the initial retransmission
timeout), `max_retries` (MAX_RETRIES), `fast_retransmit_threshold`
(FAST_RETRANSMIT_THRESHOLD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Final, get_args

MODE_BURST: Final = 0
MODE_STEP: Final = 1  # (Final: the compiled core has it inline, not a lookup per read)
MODES = {"burst": MODE_BURST, "step-by-step": MODE_STEP}
TCP_CARRIERS = ("raw", "tun")
# Congestion controllers by name: the built-in ones, and any registered
# later with gannet.core.cc.register (which adds its name here).
CONGESTION_CONTROLS: set[str] = {"newreno", "cubic", "bbr"}
_DEFAULTS: dict[str, object] | None = None  # each field's default, read once
_ALLOWED: dict[str, tuple] = {}  # the types a field's value may have, read when first needed


@dataclass(frozen=True)
class Config:
    """Every setting of a connection, each documented below; immutable
    (`with_` makes a changed copy). (A docstring of its own also spares
    the dataclass decorator from making one out of the 53-field signature
    at every start.)"""

    # --- segments -------------------------------------------------------
    mss: int = 65000
    """Largest payload per segment, announced in the SYN as what we accept;
    what we send is also bounded by the datagram size in use."""
    max_datagram_size: int = 1472
    """UDP payload size we start with: a 1500-byte MTU less IPv4 and UDP
    headers. With `pmtud` it grows when the path carries more."""
    pmtud: bool = True
    """Datagram packetization-layer path MTU discovery (RFC 8899): probe
    larger datagrams with data and keep what the path delivers. Off pins
    the datagram size at `max_datagram_size`."""
    pmtud_max: int = 65000
    """Largest datagram PMTUD tries (loopback and jumbo paths get there)."""
    datagram_overhead: int = 0
    """Bytes a layer under the connection adds to each of its datagrams
    (the security envelope's; gannet.crypto.endpoint sets it, with
    `max_datagram_size` and `pmtud_max` lowered by as much): a run of
    datagrams is sized so that it still fits one GSO send with them."""
    max_packet_size: int | None = None
    """Seed 003's max packet size: the largest datagram this side can take,
    announced in the SYN; each side sends at most the other's value."""
    mode: str = "burst"
    """Seed 003's operation mode: "burst" (sliding window) or "step-by-step"
    (one segment in flight at a time, each acknowledged before the next)."""

    # --- buffers and windows ----------------------------------------------
    window_size: int = 32 * 1024 * 1024
    """Largest receive window in bytes: the advertised window never exceeds
    it. With `autotune` the window starts smaller and grows to what the
    measured rate needs; without, it is always this."""
    send_buffer_size: int = 4 * 1024 * 1024
    """Bytes `send` accepts ahead of acknowledgment before it pushes back
    (with `autotune`, the least it accepts)."""
    autotune: bool = True
    """Size windows and buffers from the measured bandwidth-delay product, as
    Linux's receive-buffer autotuning does: the advertised window starts at
    `min(window_size, 1 MiB)` and grows to three times what the application
    read in the last round trip (up to `window_size`); the send buffer grows
    to twice the congestion window (up to `window_size`). Memory follows
    what a connection really moves, not the largest setting."""
    window_scaling: bool = True
    """Offer window scaling (RFC 7323 2) in the SYN; used when both sides do."""
    sack: bool = True
    """Offer selective acknowledgments (RFC 2018) in the SYN; used when both
    sides do. Without SACK, loss is found by duplicate ACKs (NewReno)."""
    timestamps: bool = True
    """Offer timestamps (RFC 7323 3) in the SYN, for PAWS and RTT samples."""

    # --- retransmission (RFC 6298) ------------------------------------------
    timeout: float = 1.0
    """Initial retransmission timeout, seconds (RFC 6298 says 1 s)."""
    min_rto: float = 0.2
    """Least the RTO adds to SRTT: RTO = SRTT + max(4 RTTVAR, min_rto), as
    Linux computes it (RFC 6298 asks at least 1 s in all; Linux's floor is
    200 ms above SRTT)."""
    max_rto: float = 10.0
    """Upper bound for the RTO with backoff. RFC 6298 allows 60 s; 10 s keeps a
    backed-off sender audible to the peer's keep-alive."""
    max_retries: int = 15
    """Consecutive timeouts without progress before the connection fails
    (Linux: tcp_retries2 = 15)."""
    fast_retransmit_threshold: int = 3
    """Duplicate ACKs (or SACKed segments above a hole) that mean loss."""

    # --- loss detection (RFC 8985) --------------------------------------
    rack: bool = True
    """RACK (RFC 8985 6) on SACK connections: a segment is lost once data
    sent after it has been delivered and a reordering window has passed
    (a quarter of the minimum RTT, widened when a retransmission proves
    spurious; zero while no reordering has been seen and DupThresh
    segments are SACKed). It replaces the RFC 6675 count of SACKed segments
    above a hole and also catches lost retransmissions. False keeps the
    RFC 6675 count. Connections without SACK always count duplicate ACKs."""
    tlp: bool = True
    """Tail loss probe (RFC 8985 7), with `rack`: when no ACK comes for about
    two smoothed RTTs (2*SRTT, plus `ack_delay` with one segment in flight,
    never later than the RTO), send one new segment or the last one again,
    so that a tail loss is repaired by RACK instead of a timeout."""

    # --- acknowledgments (RFC 1122 4.2.3.2) -----------------------------
    delayed_ack: bool = True
    """Hold back pure ACKs (up to `ack_delay`, at most `ack_every` full
    segments); False acknowledges every segment at once."""
    ack_delay: float = 0.025
    """Longest an ACK waits; RFC 1122 requires under 0.5 s."""
    ack_every: int = 2
    """Acknowledge at least every this many full-sized segments."""
    nodelay: bool = True
    """True disables Nagle's algorithm (small writes go out at once)."""
    busy_poll: int = 200
    """Microseconds to poll the socket without sleeping after a send that
    expects an answer (as Linux's SO_BUSY_POLL): the answer then lands on a
    running CPU instead of waking a halted one. 0 turns it off. It polls
    only while the endpoint's one connection has data in flight, on a
    machine with more than one CPU, and stops after answers keep coming
    later than this (docs/design.md, "Polling before sleeping"); it costs
    up to this much CPU per message."""

    # --- congestion control ---------------------------------------------
    congestion_control: str = "bbr"
    """"bbr" (model-based, the default), "cubic" or "newreno". BBR is the
    default because on the simulator grid (docs/congestion.md) it keeps
    86-96% of a clean link with a near-empty queue and 79-95% of a path
    with 1-5% random loss, where CUBIC and NewReno keep 6-66% (1.4-13x
    less); pick "cubic" to share deep buffers politely with loss-based TCP
    flows."""
    initial_window: int = 10
    """Initial congestion window in segments (RFC 6928)."""

    # --- liveness ---------------------------------------------------------
    keepalive: bool = True
    """Probe an idle peer (RFC 1122 4.2.3.6) and give up on a silent one."""
    keepalive_idle: float = 10.0
    """Seconds of silence, with nothing outstanding, before the first probe."""
    keepalive_interval: float = 5.0
    """Seconds between unanswered probes."""
    keepalive_count: int = 4
    """Unanswered probes before the peer is declared unreachable."""
    idle_timeout: float | None = None
    """Close with TimeoutError after this long with nothing heard (None: never)."""
    connect_timeout: float = 30.0
    """Longest a connection attempt may take before TimeoutError (the SYN is
    also given up after `max_retries` retransmissions)."""
    msl: float = 1.0
    """Maximum segment lifetime; TIME-WAIT lasts 2*MSL. Connection IDs are
    random per connection, so old duplicates cannot reach a new connection
    through the same ID and a short MSL is safe."""
    paws_window: float = 1.0
    """PAWS (RFC 7323 5): segments whose timestamp is older than the newest
    by more than this many seconds are dropped as old duplicates."""

    # --- the TCP wire (docs/tcp.md) -----------------------------------------
    tcp_carrier: str = "raw"
    """How `wire="tcp"` moves its packets: "raw", raw IPv4 sockets on the
    host's own addresses (a firewall rule keeps the kernel from resetting
    the port); "tun", a TUN device owning an address of the endpoint's own
    (a server's host, a client's local address), with the kernel's TCP
    segmentation and checksum offloads (gannet.io.tuntcp)."""

    # --- observability (docs/observability.md) -----------------------------
    qlog_dir: str | None = None
    """Write one qlog file per connection into this directory (JSON-SEQ,
    the IETF qlog schema); None writes none."""
    track_limits: bool = False
    """Measure the time each connection's sender spends limited by the
    application, the peer's window, the congestion window and pacing
    (`ConnectionInfo.*_limited_time`); on whenever qlog or the stats socket
    is. Off, the endpoint runs no observer code at all."""

    # --- listening ----------------------------------------------------------
    backlog: int = 128
    """Connections a listener holds (handshaking or waiting in the accept
    queue) before it drops new SYNs (a SYN from an unproven address gets a
    Retry instead); `listen(n)` overrides it. Half-open connections from
    unproven addresses take at most half of it (`half_open_limit`)."""

    # --- against hostile peers (docs/robustness.md) ---------------------------
    half_open_limit: int = 64
    """Half-open connections a listener keeps for addresses that have not
    proved they receive there (at most half the backlog, so that proven
    clients always find room, and at least one). Past it (or past `half_open_per_source` for
    one host, or with the backlog full) a SYN without a valid token is
    answered with a stateless Retry, no larger than the SYN, and the
    listener keeps nothing until the client echoes the token. 0: always
    Retry (one more round trip per connection, no state ever for a forged
    SYN)."""
    half_open_per_source: int = 32
    """The same limit for one source host (the address without its port),
    for unproven addresses; a host that proved its address (echoed a token)
    is bounded by the backlog alone."""
    synack_retries: int = 2
    """SYN,ACK retransmissions before a half-open connection is given up
    (Linux: tcp_synack_retries, 5): with `timeout` 1 s a half-open
    connection lives at most 7 s. Until the client proved its address, what
    is sent to it is also capped at three times what it sent (RFC 9000 8.1)."""
    unreachable_hold: float = 5.0
    """Seconds a listener sends nothing to an address that answered with an
    ICMP unreachable: its half-open connections are dropped at once and its
    SYNs ignored for this long (forged SYNs name closed ports)."""
    reset_rate: float = 1000.0
    """RSTs per second an endpoint sends for datagrams that name no
    connection of its own (Linux's icmp_msgs_per_sec for the same job);
    a token bucket of `reset_burst`."""
    reset_burst: int = 50
    """Most RSTs sent at once before `reset_rate` paces them (Linux's
    icmp_msgs_burst)."""

    # --- security (docs/security.md) ------------------------------------
    insecure: bool = False
    """Turn encryption and authentication off: datagrams in clear, anyone on
    the path reads and can alter them. For measurements and plaintext
    peers only; an encrypted peer refuses an insecure one (and the reverse)
    with a message saying so."""
    peer_key: str | None = None
    """The server's key to pin for this connection: the key (base64) or its
    fingerprint (`SHA256:...`), as `gannet id` prints them. None: trust on
    first use, checked against and pinned in
    `$XDG_CONFIG_HOME/gannet/known_hosts`."""
    psk_file: str | None = None
    """A pre-shared key file (32 bytes in base64, `gannet id --new-psk`):
    only peers that have the same key connect."""
    code: str | None = None
    """A short code such as `7-guitar-october`, given to both sides: a PAKE
    (SPAKE2) authenticates the peer that knows it."""

    def __post_init__(self) -> None:
        self._check_types()
        if self.psk_file is not None and self.code is not None:
            raise ValueError("psk_file and code cannot both be set")
        if self.insecure and (self.peer_key or self.psk_file or self.code):
            raise ValueError("insecure turns off peer_key, psk_file and code: set one or the other")
        if self.tcp_carrier not in TCP_CARRIERS:
            raise ValueError(f"tcp_carrier must be one of {sorted(TCP_CARRIERS)}, not {self.tcp_carrier!r}")
        if self.peer_key is not None:
            from .crypto.identity import decode_peer_key  # (only then: it needs cryptography)

            try:
                decode_peer_key(self.peer_key)
            except ValueError as exc:
                raise ValueError(f"peer_key: {exc}") from None
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, not {self.mode!r}")
        if not 64 <= self.mss <= 65000:
            raise ValueError(f"mss must be between 64 and 65000, not {self.mss}")
        if self.max_datagram_size < 128 or self.max_datagram_size > 65507:
            raise ValueError("max_datagram_size must be between 128 and 65507")
        if not self.max_datagram_size <= self.pmtud_max <= 65507:
            raise ValueError("pmtud_max must be between max_datagram_size and 65507")
        if self.window_size < self.mss or self.send_buffer_size < 1:
            raise ValueError("window_size must hold at least one segment")
        if self.fast_retransmit_threshold < 1 or self.max_retries < 1 or self.ack_every < 1:
            raise ValueError("thresholds and retry counts must be at least 1")
        if not 0 <= self.ack_delay < 0.5:
            raise ValueError("ack_delay must be under 0.5 s (RFC 1122)")
        if self.min_rto <= 0 or self.max_rto < self.min_rto or self.timeout <= 0:
            raise ValueError("need 0 < min_rto <= max_rto and timeout > 0")
        if self.max_packet_size is not None and not 128 <= self.max_packet_size <= 65507:
            raise ValueError(f"max_packet_size must be between 128 and 65507, not {self.max_packet_size}")
        if self.initial_window < 1:
            raise ValueError(f"initial_window must be at least 1 segment, not {self.initial_window}")
        for name in ("keepalive_idle", "keepalive_interval", "connect_timeout", "paws_window"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.keepalive_count < 1:
            raise ValueError(f"keepalive_count must be at least 1, not {self.keepalive_count}")
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive or None, not {self.idle_timeout}")
        if not self.msl >= 0:
            raise ValueError(f"msl must not be negative, not {self.msl}")
        if not 0 <= self.busy_poll <= 100_000:
            raise ValueError(f"busy_poll must be between 0 and 100000 microseconds, not {self.busy_poll}")
        if self.backlog < 1:
            raise ValueError(f"backlog must be at least 1, not {self.backlog}")
        for name in ("half_open_limit", "synack_retries", "reset_burst"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, not {getattr(self, name)}")
        if self.half_open_per_source < 1:
            raise ValueError(f"half_open_per_source must be at least 1, not {self.half_open_per_source}")
        if not self.unreachable_hold >= 0 or not self.reset_rate >= 0:
            raise ValueError("unreachable_hold and reset_rate must not be negative")
        if self.congestion_control not in CONGESTION_CONTROLS:
            raise ValueError(
                f"unknown congestion_control {self.congestion_control!r}; "
                f"available: {', '.join(sorted(CONGESTION_CONTROLS))}"
            )

    def _check_types(self) -> None:
        """TypeError for a setting of the wrong type (a bool is not a number,
        a number is not a bool); ValueError for NaN and infinities.

        A field that holds its own default is not checked (each default is
        of its field's type: tests/io/test_config_overrides.py checks them
        all), and a field's annotation is read when a value first needs it:
        reading all 48 (`typing.get_type_hints`) was about a millisecond of
        a command's start before its first datagram."""
        global _DEFAULTS
        if _DEFAULTS is None:
            _DEFAULTS = {f.name: f.default for f in fields(Config)}
        for name, default in _DEFAULTS.items():
            value = getattr(self, name)
            if value is default:
                continue
            allowed = _ALLOWED.get(name)
            if allowed is None:
                allowed = _ALLOWED[name] = _allowed_types(name)
            if value is None and type(None) in allowed:
                continue
            if bool in allowed:
                ok = isinstance(value, bool)
            elif float in allowed:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                if ok and not math.isfinite(value):
                    raise ValueError(f"Config.{name} must be a finite number, not {value!r}")
            elif int in allowed:
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, allowed)
            if not ok:
                names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
                raise TypeError(f"Config.{name} must be {names}, not {value!r}")

    def with_(self, **changes: object) -> Config:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _allowed_types(name: str) -> tuple:
    """The types Config's field `name` takes: its annotation (a string, as
    this module's annotations are postponed) evaluated here, as
    `typing.get_type_hints` evaluates each: `int | None` -> (int, NoneType)."""
    hint = eval(Config.__annotations__[name], globals())  # (this module's own source)
    return get_args(hint) or (hint,)
