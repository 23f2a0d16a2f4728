"""Every setting of a Gannet connection, in one documented object.

The names the seed projects used are kept recognizable: `mss` (MSS),
`window_size` (WINDOW_SIZE), `timeout` (TIMEOUT, the initial retransmission
timeout), `max_retries` (MAX_RETRIES), `fast_retransmit_threshold`
(FAST_RETRANSMIT_THRESHOLD).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

MODE_BURST = 0
MODE_STEP = 1
MODES = {"burst": MODE_BURST, "step-by-step": MODE_STEP}


@dataclass(frozen=True)
class Config:
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
    sack: bool = True
    timestamps: bool = True

    # --- retransmission (RFC 6298) ------------------------------------------
    timeout: float = 1.0
    """Initial retransmission timeout, seconds (RFC 6298 says 1 s)."""
    min_rto: float = 0.2
    """Lower bound for the RTO. RFC 6298 asks 1 s; like Linux we use 200 ms."""
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
    ack_delay: float = 0.025
    """Longest an ACK waits; RFC 1122 requires under 0.5 s."""
    ack_every: int = 2
    """Acknowledge at least every this many full-sized segments."""
    nodelay: bool = True
    """True disables Nagle's algorithm (small writes go out at once)."""

    # --- congestion control ---------------------------------------------
    congestion_control: str = "bbr"
    """"bbr" (model-based, the default), "cubic" or "newreno". BBR is the
    default because on the simulator grid (docs/congestion.md) it keeps
    85-96% of a clean link with a near-empty queue and is 1.5-8x faster than
    CUBIC and NewReno on lossy paths; pick "cubic" to share deep buffers
    politely with loss-based TCP flows."""
    initial_window: int = 10
    """Initial congestion window in segments (RFC 6928)."""

    # --- liveness ---------------------------------------------------------
    keepalive: bool = True
    keepalive_idle: float = 10.0
    keepalive_interval: float = 5.0
    keepalive_count: int = 4
    """Unanswered probes before the peer is declared unreachable."""
    idle_timeout: float | None = None
    """Close with TimeoutError after this long with nothing heard (None: never)."""
    connect_timeout: float = 30.0
    msl: float = 1.0
    """Maximum segment lifetime; TIME-WAIT lasts 2*MSL. Connection IDs are
    random per connection, so old duplicates cannot reach a new connection
    through the same ID and a short MSL is safe."""
    paws_window: float = 1.0
    """PAWS (RFC 7323 5): segments whose timestamp is older than the newest
    by more than this many seconds are dropped as old duplicates."""

    # --- listening ----------------------------------------------------------
    backlog: int = 128

    def __post_init__(self) -> None:
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

    def with_(self, **changes: object) -> Config:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
