"""`gannet stats`: the live connections of every running Gannet process of
this user, with their info (like `ss -ti`)."""

from __future__ import annotations

import argparse
import json
import sys

from gannet.observe import control
from gannet.cli.main import summary


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stats",
        help=summary("stats"),
        description="Ask every running Gannet process of this user (through its stats socket "
        f"in {control.runtime_dir()}) for its live connections and show each one's state, "
        "RTTs, windows, pacing, losses, path MTU and what limited its sender.",
    )
    p.add_argument("--pid", type=int, help="only this process")
    p.add_argument("--json", action="store_true", help="one JSON object per process on stdout")
    p.add_argument("--dir", help=argparse.SUPPRESS)  # another runtime directory (tests)
    p.set_defaults(func=run, serves_stats=False)


def run(args: argparse.Namespace) -> int:
    answers = control.query_all(args.dir, args.pid)
    if args.json:
        for a in answers:
            print(json.dumps(a), flush=True)
        return 0
    if not answers:
        print("gannet stats: no running Gannet process serves stats", file=sys.stderr)
        return 0
    for a in answers:
        cmd = " ".join(_short(x) for x in a.get("argv", [])[1:]) or "(library)"
        conns = a.get("connections", [])
        print(f"pid {a.get('pid')}: gannet {cmd} - {len(conns)} connection{'s' if len(conns) != 1 else ''}")
        for c in conns:
            print(format_connection(c))
    return 0


def _short(arg: str) -> str:
    return arg if len(arg) <= 40 else arg[:37] + "..."


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.3g}"


def _rate(bytes_per_s: float | None) -> str:
    if not bytes_per_s:
        return "-"
    bits = bytes_per_s * 8
    for unit, scale in (("Gbps", 1e9), ("Mbps", 1e6), ("Kbps", 1e3)):
        if bits >= scale:
            return f"{bits / scale:.3g}{unit}"
    return f"{bits:.0f}bps"


def _limits(c: dict) -> str:
    busy = c.get("busy_time")
    if busy is None:
        return ""
    parts = [f"busy:{busy * 1000:.0f}ms"]
    for key, name in (("rwnd_limited_time", "rwnd_limited"), ("cwnd_limited_time", "cwnd_limited"),
                      ("pacing_limited_time", "pacing_limited"), ("app_limited_time", "app_limited")):
        t = c.get(key) or 0.0
        if t > 0:
            age = c.get("age") or 0.0
            share = f"({100 * t / age:.0f}%)" if age > 0 else ""
            parts.append(f"{name}:{t * 1000:.0f}ms{share}")
    return " ".join(parts)


def format_connection(c: dict) -> str:
    """Two lines per connection, in ss -ti's manner."""
    head = (f"  {c['state']:<12} {c.get('local_addr', '?'):<22} {c['remote_addr']:<22} "
            f"cid {c['local_cid']:08x}->{c['remote_cid']:08x} {c['role']}")
    ssthresh = f" ssthresh:{c['ssthresh']}" if c.get("ssthresh") is not None else ""
    info = (f"\t {c['congestion_control']}/{c['cc_state']} rto:{_ms(c['rto'])} "
            f"rtt:{_ms(c['srtt'])}/{_ms(c['rttvar'])} minrtt:{_ms(c['min_rtt'])} mss:{c['mss']} "
            f"pmtu:{c['path_mtu']} cwnd:{c['cwnd']}{ssthresh} bytes_sent:{c['bytes_sent']} "
            f"bytes_retrans:{c['retransmitted_bytes']} bytes_acked:{c['bytes_acked']} "
            f"bytes_received:{c['bytes_received']} segs_out:{c['segments_sent']} segs_in:{c['segments_received']} "
            f"pacing_rate:{_rate(c['pacing_rate'])} delivery_rate:{_rate(c['delivery_rate'])} "
            f"inflight:{c['bytes_in_flight']} unacked:{c['unacked']} retrans:{c['retransmits']} "
            f"lost:{c['lost']} sacked:{c['sacked']} timeouts:{c['timeouts']} "
            f"reordering:{'yes' if c['reordering_seen'] else 'no'} snd_wnd:{c['snd_wnd']} "
            f"rcv_wnd:{c['rcv_wnd']} rcv_space:{c['rcv_space']} notsent:{c['send_queue']} "
            f"unread:{c['readable']} {_limits(c)}")
    return head + "\n" + info.rstrip()
