"""A connection's state in numbers, as Linux's TCP_INFO gives it (`ss -ti`).

`connection_info(conn, now)` reads the connection's own fields once and
returns a `ConnectionInfo`: nothing is kept or counted for it, so asking
costs only the read. The time spent limited by the application, the
receiver's window, the congestion window and pacing (Linux's
tcpi_busy_time, tcpi_rwnd_limited, ...) is measured by a `LimitClock`
(observe/limits.py) when one watches the connection; without one those
fields are None.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.connection import Connection
    from .limits import LimitClock

NO_SSTHRESH = 1 << 60  # a controller's "arbitrarily high" ssthresh (RFC 5681 3.1) reads as None


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    state: str
    """RFC 9293 state name."""
    local_cid: int
    remote_cid: int
    remote_addr: str
    role: str
    """"client" (active open) or "server" (passive open)."""
    age: float
    """Seconds since the connection was made."""
    congestion_control: str
    cc_state: str
    """The controller's phase: BBR's startup/drain/probe_bw/probe_rtt; else
    slow_start/congestion_avoidance; "recovery" during loss recovery."""
    srtt: float | None
    rttvar: float
    min_rtt: float | None
    latest_rtt: float | None
    rto: float
    """Retransmission timeout with backoff applied, seconds."""
    cwnd: int
    ssthresh: int | None
    pacing_rate: float | None
    """Bytes per second, None when the controller does not pace."""
    delivery_rate: float | None
    """BBR's bottleneck bandwidth estimate in bytes per second (None otherwise)."""
    bytes_in_flight: int
    """RFC 6675 pipe: sent bytes believed still in the network."""
    unacked: int
    """Sent and not cumulatively acknowledged (FlightSize)."""
    bytes_sent: int
    bytes_acked: int
    bytes_received: int
    delivered: int
    """Bytes delivered to the peer (cumulatively ACKed or SACKed)."""
    segments_sent: int
    segments_received: int
    retransmits: int
    retransmitted_bytes: int
    lost: int
    """Bytes marked lost now and not yet resent."""
    sacked: int
    """Bytes SACKed above the cumulative ACK now."""
    timeouts: int
    fast_recoveries: int
    reordering_seen: bool
    reo_wnd: float
    """RACK's reordering window now, seconds."""
    path_mtu: int
    """UDP payload size in use (grows with PMTUD)."""
    mss: int
    snd_wnd: int
    """The peer's receive window (what we may send beyond snd_una)."""
    max_snd_wnd: int
    rcv_wnd: int
    """The window this side offers now."""
    rcv_space: int
    """Autotuned receive buffer size."""
    readable: int
    """Received bytes the application has not read yet."""
    send_queue: int
    """Bytes written by the application and not yet acknowledged."""
    busy_time: float | None
    """Seconds with data in flight or waiting to be sent."""
    app_limited_time: float | None
    """Seconds with nothing left to send while the windows had room."""
    rwnd_limited_time: float | None
    rwnd_shrunk_time: float | None
    """Of rwnd_limited_time, the seconds the peer offered less than half its
    largest window: its buffer was filling (the application reads slowly)."""
    cwnd_limited_time: float | None
    pacing_limited_time: float | None
    zero_window_events: int | None
    """Times the peer's window closed (a slow reader's sign)."""

    def as_dict(self) -> dict:
        return asdict(self)


INFO_FIELDS = tuple(f.name for f in fields(ConnectionInfo))


def cc_state(conn: Connection) -> str:
    """The congestion controller's phase name (see ConnectionInfo.cc_state)."""
    if conn.in_recovery:
        return "recovery"
    phase = getattr(conn.cc, "state", None)
    if isinstance(phase, str):
        return phase
    return "slow_start" if conn.cc.cwnd < conn.cc.ssthresh else "congestion_avoidance"


def connection_info(conn: Connection, now: float, clock: LimitClock | None = None,
                    overhead: int = 0) -> ConnectionInfo:
    """Read `conn`'s fields now. `clock`: the LimitClock watching it, if any
    (then the limited times are filled in up to `now`). `overhead`: what the
    endpoint adds to each datagram (the encryption envelope), so that
    path_mtu is the size on the wire, not the connection's share of it."""
    rtt = conn.rtt
    cc = conn.cc
    rack = conn.loss.rack
    limits = clock.totals(now) if clock is not None else None
    send_queue = conn.snd.sndbuf.end - max(conn.snd_una, conn.snd.sndbuf.start)
    ssthresh = cc.ssthresh if cc.ssthresh < NO_SSTHRESH else None
    btl_bw = getattr(cc, "btl_bw", None)
    return ConnectionInfo(
        state=conn.state.name,
        local_cid=conn.local_cid,
        remote_cid=conn.remote_cid,
        remote_addr=_addr(conn.remote_addr),
        role="server" if conn.passive else "client",
        age=now - conn.created,
        congestion_control=cc.name,
        cc_state=cc_state(conn),
        srtt=rtt.srtt,
        rttvar=rtt.rttvar,
        min_rtt=rtt.min_rtt,
        latest_rtt=rtt.latest_rtt,
        rto=rtt.current_rto(),
        cwnd=conn.snd.cwnd(),
        ssthresh=ssthresh,
        pacing_rate=cc.pacing_rate,
        delivery_rate=float(btl_bw) if btl_bw else None,
        bytes_in_flight=conn.snd.pipe(),
        unacked=conn.snd.outstanding(),
        bytes_sent=conn.stats.bytes_sent,
        bytes_acked=max(0, min(conn.snd_una, conn.snd.sndbuf.end) - conn.iss - 1),
        bytes_received=conn.stats.bytes_received,
        delivered=conn.delivered,
        segments_sent=conn.stats.segments_sent,
        segments_received=conn.stats.segments_received,
        retransmits=conn.stats.retransmits,
        retransmitted_bytes=conn.stats.retransmitted_bytes,
        lost=conn.lost.total,
        sacked=conn.sacked.total,
        timeouts=conn.stats.timeouts,
        fast_recoveries=conn.stats.fast_recoveries,
        reordering_seen=bool(rack.reordering_seen),
        reo_wnd=rack.reo_wnd() if hasattr(rack, "reo_wnd") else 0.0,
        path_mtu=conn.max_datagram_size + overhead,
        mss=conn.mss,
        snd_wnd=conn.snd_wnd,
        max_snd_wnd=conn.max_snd_wnd,
        rcv_wnd=max(0, conn.rcv.rcv_adv - conn.rcv_nxt),
        rcv_space=conn.rcv.space,
        readable=conn.readable_bytes,
        send_queue=max(0, send_queue),
        busy_time=limits["busy"] if limits else None,
        app_limited_time=limits["app"] if limits else None,
        rwnd_limited_time=limits["rwnd"] if limits else None,
        rwnd_shrunk_time=limits["shrunk"] if limits else None,
        cwnd_limited_time=limits["cwnd"] if limits else None,
        pacing_limited_time=limits["pacing"] if limits else None,
        zero_window_events=clock.zero_windows if clock is not None else None,
    )


def _addr(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)
