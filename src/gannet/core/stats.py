"""Counters a connection keeps, for people and benchmarks."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)  # no per-connection instance dict
class ConnectionStats:
    bytes_sent: int = 0
    """Payload bytes put on the wire, retransmissions included."""
    bytes_received: int = 0
    """Payload bytes delivered in order to the receive buffer."""
    segments_sent: int = 0
    segments_received: int = 0
    fast_path_segments: int = 0
    """Of segments_received, those taken in runs by the in-order fast path."""
    runs_sent: int = 0
    """Batches of full-size segments sent as one run (one GSO send each)."""
    retransmits: int = 0
    """Segments sent again (fast retransmit, SACK recovery, timeouts)."""
    retransmitted_bytes: int = 0
    timeouts: int = 0
    fast_recoveries: int = 0
    duplicate_segments: int = 0
    """Arrivals that carried only bytes we already had."""
    out_of_order_segments: int = 0
    ooo_dropped: int = 0
    """Out-of-order segments dropped because holding them would pass the
    memory the receive window allows (Connection._ooo_hold)."""
    dropped_segments: int = 0
    """Arrivals rejected by validation (window, PAWS, RST checks)."""
    challenge_acks: int = 0
    keepalive_probes: int = 0
    window_probes: int = 0
    pmtu_local_failures: int = 0
    """PMTU probes the local stack refused (EMSGSIZE): the search ended below them."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
