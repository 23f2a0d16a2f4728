"""Lossy-link benchmark: Gannet beside kernel TCP (CUBIC, BBR) through netlab.

Needs root (it builds a `gannet.netlab` lab: two network namespaces joined by a
user-space emulated link). For every link below, in one run and through the
same emulator settings, each flow type does a time-bounded bulk transfer from
namespace a to namespace b:

- Gannet, once per congestion controller `gannet.core.cc.available()` lists
  (blocking `gannet.Socket`, `cc=NAME`), encrypted as Gannet runs by default
  (`--insecure`: in clear instead; `--also-insecure`: both, in the same run);
  a row says which, and is failed when the flow did not run that way;
- kernel TCP with CUBIC and with BBR (`TCP_CONGESTION` per socket);
- with `--gannet-tcp-cc` / `--gannet-tun-cc`, Gannet's engine on the TCP
  wire to a kernel receiver, on raw sockets / on the TUN carrier (an address
  of its own in namespace a, 10.77.N.10 and up, which a forwards).

Every byte is verified: the receiver hashes what it got (SHA-256) and sends the
digest back; the sender compares it with the hash of what it sent.

Reported per flow: goodput (payload bytes / receiver's first-to-last byte) in
Mbit/s and as % of the link rate (the issue's measure: payload over the rate
of IP bytes, so no flow can reach 100 %); beside it the flow's payload
ceiling, MSS / 1500 (1448 B = 96.5 % for both Gannet and kernel TCP with
timestamps: a 1500-byte packet spends 52 bytes on headers either way), and
goodput as % of that ceiling, i.e. how much of the link the flow used; on the loss-free link, the queueing delay the
flow adds (ping RTT alongside, median, minus the idle RTT; and the emulator's
mean rate-queue wait). Fairness: two Gannet flows at once (Jain index), and a
Gannet flow beside a kernel CUBIC flow (share ratio Gannet / CUBIC), both over
the window where both send, for the default controller (bbr) and newreno
(`--fairness-cc`); on the loss-free link the pairs get the ping too, and a
last table lists the queueing delay of every flow and pair beside the
kernel flows'. A row where `lab.saturated()` says the emulator
was the limit is run once more, then refused.

    sudo .venv/bin/python bench/lossy.py --quick            # 8 s per flow
    sudo .venv/bin/python bench/lossy.py --json r.json --markdown r.md   # 30 s per flow

Links (rate on both directions, delay split evenly, random loss on the data
direction a->b only, drop-tail queue of one bandwidth-delay product):

    clean   50 Mbit/s, 40 ms RTT, 0 % loss
    loss1   50 Mbit/s, 40 ms RTT, 1 % loss
    loss2   50 Mbit/s, 100 ms RTT, 2 % loss
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve()
PY = sys.executable
BASE_PORT = 7300
SAMPLE_EVERY = 0.1  # receiver's cumulative-bytes timeline, seconds
LINK_MTU = 1500  # the lab's interface MTU; netlab's rate limit counts whole IP packets


# --------------------------------------------------------------------------- peers
# `python bench/lossy.py peer server|client ...` runs inside a namespace.

def _pattern_block() -> bytes:
    # 1 MiB + 7: chunk boundaries drift against segment boundaries
    return random.Random(0x6A77E7).randbytes((1 << 20) + 7)


_PEER_SOCKETS: list = []  # what a failing peer reports on (_diag)


def _open(proto: str, cc: str, insecure: bool = False):
    if proto in ("gannet", "gannet-tcp", "gannet-tun"):
        import gannet
        # gannet-tcp: Gannet's engine on the TCP wire (raw sockets), sending
        # to a kernel TCP receiver (peer_server opens a kernel socket for it);
        # gannet-tun: the same on the TUN carrier (gannet.io.tuntcp).
        # Over UDP Gannet runs encrypted (the default: the client trusts the
        # server's key on first use, in the run's own config directory) unless
        # the run was started with --insecure.
        if proto == "gannet":
            sock = gannet.Socket(cc=cc, **({"insecure": True} if insecure else {}))
        else:
            sock = gannet.Socket(cc=cc, wire="tcp", tcp_carrier="tun" if proto == "gannet-tun" else "raw")
        _PEER_SOCKETS.append(sock)
        return sock
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if cc:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    return s


def _tcp_cc(s) -> str | None:
    try:
        return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
    except (OSError, AttributeError):
        return None


def _payload_per_packet(s, proto) -> int | None:
    """Payload bytes a full-size packet carries: Gannet's MSS, or the kernel's
    current send MSS (TCP_MAXSEG: 1448 with timestamps on a 1500-byte path)."""
    try:
        if proto.startswith("gannet"):
            return s.connection.mss
        return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
    except (OSError, AttributeError):
        return None


def _stats(s) -> dict | None:
    st = getattr(s, "stats", None)
    if st is None:
        return None
    return {k: getattr(st, k) for k in ("segments_sent", "retransmits", "timeouts",
                                        "fast_recoveries") if hasattr(st, k)}


def _sealed(s) -> int | None:
    """Datagrams the Gannet endpoint sealed (0: the flow ran in clear), so
    that a row's "encrypted" is what happened, not what was asked for."""
    sec = getattr(getattr(getattr(s, "_aep", None), "ep", None), "security_stats", None)
    return sec.sealed if sec is not None else None


def _diag(s) -> dict:
    """What a failed peer knew (LOSSY runs print it as a JSON line before the
    traceback): its connection's sequence state and counters, the endpoint's
    drop counters and the socket adapter's, so that a connection that dies
    says which side stopped hearing the other and why."""
    out: dict = {}
    conn = getattr(s, "connection", None)
    if conn is not None:
        now = time.monotonic()
        out["conn"] = {
            "state": str(conn.state), "local_cid": conn.local_cid, "remote_cid": conn.remote_cid,
            "remote_addr": repr(conn.remote_addr), "iss": conn.iss, "irs": conn.irs,
            "snd_una": conn.snd_una - conn.iss, "snd_nxt": conn.snd_nxt - conn.iss,
            "rcv_nxt": conn.rcv_nxt - conn.irs, "snd_wnd": conn.snd_wnd, "mss": conn.mss,
            "max_datagram_size": conn.max_datagram_size,
            "sacked": [(a - conn.iss, b - conn.iss) for a, b in conn.sacked.ranges()][:8],
            "lost": [(a - conn.iss, b - conn.iss) for a, b in conn.lost.ranges()][:8],
            "ooo": [(a - conn.irs, b - conn.irs) for a, b in conn.rcv.ooo_ranges.ranges()][:8],
            "last_received_ago": round(now - conn.last_received, 3),
            "age": round(now - conn.created, 3),
            "rto": conn.rtt.current_rto(), "srtt": conn.rtt.srtt,
            "pmtu_ladder": list(conn.snd.pmtu_ladder), "pmtu_probe": conn.snd.pmtu_probe,
            "ts_recent": conn.rcv.ts_recent, "stats": conn.stats.as_dict(),
        }
    for name in ("endpoint_stats",):
        st = getattr(s, name, None)
        if st is not None:
            out[name] = st.as_dict()
    aep = getattr(s, "_aep", None)
    if aep is not None:
        from dataclasses import asdict
        out["io_stats"] = asdict(aep.io_stats)
        out["icmp_errors"] = aep.icmp_errors
    return out


def peer_server(args) -> None:
    if args.proto in ("gannet-tcp", "gannet-tun"):
        lsock = _open("tcp", "")  # a kernel receiver for Gannet on the TCP wire
    else:
        lsock = _open(args.proto, args.cc, args.insecure)
    lsock.bind((args.host, args.port))
    lsock.listen(1)
    print("ready", flush=True)
    conn, _ = lsock.accept()
    if args.proto == "gannet":
        _PEER_SOCKETS.append(conn)
    h, n, first, last, gap = hashlib.sha256(), 0, None, None, 0.0
    samples, next_sample = [], 0.0
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    recv_into = getattr(conn, "recv_into", None)
    while True:
        if recv_into is not None:
            k = recv_into(view)
            data = view[:k]
        else:
            data = conn.recv(1 << 16)
            k = len(data)
        now = time.monotonic()
        if not k:
            break
        if first is None:
            first = now
        else:
            gap = max(gap, now - last)
        last = now
        h.update(data)
        n += k
        if now >= next_sample:
            samples.append((now, n))
            next_sample = now + SAMPLE_EVERY
    samples.append((last or time.monotonic(), n))
    conn.sendall(h.hexdigest().encode())
    conn.close()
    print(json.dumps({"bytes": n, "sha256": h.hexdigest(), "first": first, "last": last,
                      "max_gap": gap, "samples": samples}), flush=True)


def _start_trace(s, path, start) -> None:
    """Debugging aid (LOSSY_TRACE=PREFIX): the sender's controller state every
    0.25 s, one JSON line each, to PREFIX.LINK.PORT."""
    import threading

    def loop():
        with open(path, "w") as out:
            while True:
                time.sleep(0.25)
                conn = s.connection
                if conn is None:
                    continue
                cc = conn.cc
                rec = {"t": round(time.monotonic() - start, 3), "cwnd": cc.cwnd, "mss": conn.mss,
                       "retransmits": conn.stats.retransmits, "timeouts": conn.stats.timeouts,
                       "srtt": getattr(conn.rtt, "srtt", None), "bytes_sent": conn.stats.bytes_sent,
                       "delivered": getattr(conn, "delivered", None),
                       "outstanding": conn.snd_nxt - conn.snd_una, "snd_wnd": conn.snd_wnd,
                       "in_recovery": getattr(conn, "in_recovery", None), "pipe": conn.snd.pipe()}
                for k in ("state", "btl_bw", "min_rtt", "inflight_hi", "pacing_rate", "pacing_gain", "loss_comp"):
                    v = getattr(cc, k, None)
                    rec[k] = v if v != float("inf") else -1
                out.write(json.dumps(rec) + "\n")
                out.flush()

    threading.Thread(target=loop, daemon=True).start()


def peer_client(args) -> None:
    s = _open(args.proto, args.cc, args.insecure)
    if args.bind:
        s.bind((args.bind, 0))
    s.connect((args.host, args.port))
    block = _pattern_block()
    chunk = 1 << 16 if args.proto.startswith("gannet") else 1 << 18
    h, sent, off = hashlib.sha256(), 0, 0
    start = time.monotonic()
    deadline = start + args.seconds
    print("connected", start, flush=True)
    if args.proto == "gannet" and os.environ.get("LOSSY_TRACE"):
        _start_trace(s, f"{os.environ['LOSSY_TRACE']}.{args.port}", start)
    while time.monotonic() < deadline:
        piece = block[off:off + chunk]
        off = (off + len(piece)) % len(block)
        s.sendall(piece)
        h.update(piece)
        sent += len(piece)
    stop = time.monotonic()
    s.shutdown(socket.SHUT_WR)
    echo = b""
    while len(echo) < 64:
        data = s.recv(64)
        if not data:
            break
        echo += data
    result = {"sent": sent, "sha256": h.hexdigest(), "echo": echo.decode(errors="replace"),
              "start": start, "stop": stop, "cc": _tcp_cc(s) if args.proto == "tcp" else args.cc,
              "mss": _payload_per_packet(s, args.proto),
              "stats": _stats(s), "sealed": _sealed(s) if args.proto == "gannet" else None}
    s.close()
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------------- orchestration

@dataclass(frozen=True)
class LinkSpec:
    name: str
    rate: float  # bit/s
    rtt: float   # s
    loss: float

    @property
    def bdp(self) -> int:
        return int(self.rate * self.rtt / 8)

    def describe(self) -> str:
        return (f"{self.rate / 1e6:g} Mbit/s, {self.rtt * 1e3:g} ms RTT, {self.loss:.0%} loss, "
                f"queue {self.bdp // 1000} kB (1 BDP)")

    def configs(self):
        from gannet.netlab import LinkConfig
        common = dict(delay=self.rtt / 2, rate=self.rate, queue_bytes=self.bdp,
                      queue_packets=100_000)
        return LinkConfig(loss=self.loss, **common), LinkConfig(**common)


LINKS = [LinkSpec("clean", 50e6, 0.040, 0.0), LinkSpec("loss1", 50e6, 0.040, 0.01),
         LinkSpec("loss2", 50e6, 0.100, 0.02)]


@dataclass(frozen=True)
class Flow:
    proto: str  # "gannet" | "tcp" | "gannet-tcp" | "gannet-tun"
    cc: str
    insecure: bool = False  # a Gannet flow over UDP in clear (--insecure), else encrypted

    @property
    def label(self) -> str:
        if self.proto == "gannet-tcp":
            return f"Gannet TCP-wire {self.cc} -> kernel"
        if self.proto == "gannet-tun":
            return f"Gannet TCP-wire (TUN) {self.cc} -> kernel"
        if self.proto == "gannet":
            return f"Gannet {self.cc} " + ("--insecure" if self.insecure else "encrypted")
        return f"kernel TCP {self.cc}"

    def peer_args(self) -> list[str]:
        return ["--proto", self.proto, "--cc", self.cc] + (["--insecure"] if self.insecure else [])


def gannet_controllers() -> list[str]:
    try:
        from gannet.core.cc import available
        return available()
    except ImportError:
        return ["newreno"]


def default_controller() -> str:
    try:
        from gannet.config import Config
        return Config().congestion_control
    except ImportError:
        return "newreno"


def ensure_tcp_cc(names) -> dict[str, str]:
    """{name: why unavailable} for kernel congestion controls we cannot use."""
    path = Path("/proc/sys/net/ipv4/tcp_available_congestion_control")
    have = path.read_text().split() if path.exists() else []
    missing = {}
    for name in names:
        if name not in have:
            subprocess.run(["modprobe", f"tcp_{name}"], capture_output=True, timeout=20)
            have = path.read_text().split() if path.exists() else []
            if name not in have:
                missing[name] = f"tcp_{name} not available (modprobe failed)"
    return missing


# The peers run at a lower priority than the forwarder's (nice -10), so that on a
# small machine the emulator, not the peers, gets the CPU first.
PEER_NICE = ["nice", "-n", os.environ.get("LOSSY_PEER_NICE", "0")]


def _proc(lab, node, argv, env=None):
    return lab.popen(node, PEER_NICE + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _wait_line(proc, prefix, timeout=20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
        if not line and proc.poll() is not None:
            break
    proc.kill()
    out, err = proc.communicate(timeout=5)
    raise RuntimeError(f"peer gave no {prefix!r}: {out[-500:]} {err[-1500:]}")


def _finish(proc, timeout) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=5)
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = err.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        res = {"error": tail[0][-300:]}
        if lines:  # a failed Gannet peer's state (_diag), kept in the JSON report
            try:
                res["diag"] = json.loads(lines[-1]).get("diag")
            except ValueError:
                pass
        return res
    return json.loads(lines[-1])


def _ping_rtts(text: str) -> list[float]:
    return [float(m) for m in re.findall(r"time=([\d.]+) ms", text)]


def bytes_at(samples, t) -> float:
    """Receiver's cumulative byte count at time t (linear between samples)."""
    prev_t, prev_n = None, 0
    for st, sn in samples:
        if st >= t:
            if prev_t is None or st == prev_t:
                return sn if prev_t is not None else 0
            return prev_n + (sn - prev_n) * (t - prev_t) / (st - prev_t)
        prev_t, prev_n = st, sn
    return prev_n


def run_flows(spec: LinkSpec, flows: list[Flow], seconds: float, seed: int,
              ping: bool = False, late_fraction: float = 0.05) -> dict:
    """One lab, `flows` started together a -> b; returns per-flow results and lab stats."""
    from gannet.netlab import Netlab
    a_to_b, b_to_a = spec.configs()
    with Netlab(a_to_b=a_to_b, b_to_a=b_to_a, seed=seed) as lab:
        dst = lab.addr("b")
        base = None
        if ping:
            r = lab.run("a", ["ping", "-n", "-c", "5", "-i", "0.2", dst], timeout=15)
            base = min(_ping_rtts(r.stdout) or [float("nan")])
        servers = []
        for i, f in enumerate(flows):
            p = _proc(lab, "b", [PY, str(HERE), "peer", "server", *f.peer_args(),
                                 "--host", dst, "--port", str(BASE_PORT + i)])
            _wait_line(p, "ready")
            servers.append(p)
        binds = {}
        if any(f.proto == "gannet-tun" for f in flows):
            # The TUN carrier's address: in the link's network, so b sends it
            # across the link; a forwards it to the TUN device.
            lab.run("a", ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], timeout=15)
            net = lab.addr("a").rsplit(".", 1)[0]
            binds = {i: f"{net}.{10 + i}" for i, f in enumerate(flows) if f.proto == "gannet-tun"}
        lab.reset_stats()
        # LOSSY_TRACE=PREFIX: one trace per link and flow, PREFIX.LINK.PORT
        trace = {"LOSSY_TRACE": f"{os.environ['LOSSY_TRACE']}.{spec.name}"} if os.environ.get("LOSSY_TRACE") else None
        clients = [_proc(lab, "a", [PY, str(HERE), "peer", "client", *f.peer_args(),
                                    "--host", dst, "--port", str(BASE_PORT + i),
                                    "--seconds", str(seconds), "--bind", binds.get(i, "")], env=trace)
                   for i, f in enumerate(flows)]
        pinger = None
        if ping:  # skip the first 2 s (slow start); 5 probes a second
            count = max(3, int((seconds - 2.5) / 0.2))
            pinger = lab.popen("a", f"sleep 2; exec ping -n -i 0.2 -c {count} {dst}",
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in clients:
            _wait_line(c, "connected")
        budget = seconds + 90
        cres = [_finish(c, budget) for c in clients]
        sres = [_finish(s, 30) for s in servers]
        st = lab.stats()
        saturated = lab.saturated(st, late_fraction=late_fraction)
        loaded = None
        if pinger is not None:
            try:
                out, _ = pinger.communicate(timeout=seconds + 10)
            except subprocess.TimeoutExpired:
                pinger.kill()
                out, _ = pinger.communicate(timeout=5)
            loaded = _ping_rtts(out)
    results = []
    for f, c, s in zip(flows, cres, sres):
        row = {"flow": f.label, "proto": f.proto, "cc": f.cc, "client": c,
               "server": {k: v for k, v in s.items() if k != "samples"}}
        err = c.get("error") or s.get("error")
        if err:
            row["status"] = f"error: {err}"
        elif not (c["sent"] == s["bytes"] and c["sha256"] == s["sha256"] == c["echo"]):
            row["status"] = "FAIL: bytes or SHA-256 differ"
        else:
            row["status"] = "ok"
            row["goodput"] = s["bytes"] * 8 / (s["last"] - s["first"])
            if f.proto == "tcp" and c.get("cc") != f.cc:
                row["status"] = f"FAIL: kernel used {c.get('cc')}, not {f.cc}"
            if f.proto == "gannet" and bool(c.get("sealed")) == f.insecure:
                row["status"] = (f"FAIL: {c.get('sealed')} datagrams sealed, the flow should "
                                 + ("have run in clear" if f.insecure else "have been encrypted"))
        row["samples"] = s.get("samples", [])
        results.append(row)
    ab = st["links"]["a->b"]
    out = {"flows": results, "saturated": saturated,
           "link_stats": {"rx_packets": ab["rx_packets"], "dropped": ab["dropped"],
                          "queue_delay": ab["queue_delay"], "queue_max_bytes": ab["queue"]["max_bytes"]},
           "forwarder_peak_load": st["forwarder"]["peak_load"],
           "late_share": (st["forwarder"]["late"]["over_2ms"] / st["forwarder"]["late"]["count"]
                          if st["forwarder"]["late"]["count"] else 0.0)}
    if ping:
        out["ping_base_ms"] = base
        out["ping_loaded_ms"] = loaded
    # the window in which every flow was sending, less a warm-up
    if all(r["status"] == "ok" for r in results):
        t0 = max(r["client"]["start"] for r in results) + min(2.0, seconds * 0.2)
        t1 = min(r["client"]["stop"] for r in results)
        if t1 > t0:
            out["window"] = [t0, t1]
            for r in results:
                r["window_goodput"] = (bytes_at(r["samples"], t1) - bytes_at(r["samples"], t0)) * 8 / (t1 - t0)
    for r in results:
        r.pop("samples")
    return out


def run_with_retry(spec, flows, seconds, seed, retries, ping=False, log=print,
                   late_fraction=0.05) -> dict:
    for attempt in range(retries + 1):
        t = time.monotonic()
        res = run_flows(spec, flows, seconds, seed + attempt, ping=ping,
                        late_fraction=late_fraction)
        res["attempts"] = attempt + 1
        res["seconds"] = seconds
        res["wall_seconds"] = time.monotonic() - t
        if not res["saturated"]:
            return res
        log(f"  emulator was the limit ({'; '.join(res['saturated'])})"
            + ("; running again" if attempt < retries else "; refusing the row"))
    return res


def jain(xs) -> float:
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


# ----------------------------------------------------------------------------- report

def fmt_mbit(x) -> str:
    return f"{x / 1e6:.1f}" if x is not None else "-"


def single_rows(results) -> list[list[str]]:
    rows = []
    for r in results:
        spec = r["link"]
        for f in r["run"]["flows"]:
            sat = r["run"]["saturated"]
            st = f["client"].get("stats") or {}
            rtx = (f"{st['retransmits']} / {st['timeouts']}" if st else "-")
            qd = emu = "-"
            if spec["loss"] == 0 and not sat and f["status"] == "ok":
                base, loaded = r["run"].get("ping_base_ms"), r["run"].get("ping_loaded_ms")
                if base and loaded:
                    qd = f"{statistics.median(loaded) - base:.1f}"
                emu = f"{r['run']['link_stats']['queue_delay']['mean'] * 1e3:.1f}"
            if sat:
                seen = (f" (measured {fmt_mbit(f['goodput'])} Mbit/s)" if f.get("goodput") else "")
                rows.append([spec["name"], f["flow"], "refused", "-", "-", "-", "-", qd, emu, rtx,
                             "emulator was the limit: " + "; ".join(sat) + seen])
                continue
            if f["status"] != "ok":
                rows.append([spec["name"], f["flow"], "-", "-", "-", "-", "-", qd, emu, rtx, f["status"]])
                continue
            g = f["goodput"]
            srv = f["server"]
            span = srv["last"] - srv["first"]
            note = f"took {span:.0f} s" if span > 1.5 * r["run"]["seconds"] else ""
            late = r["run"].get("late_share", 0)
            if late > 0.01:
                note += (", " if note else "") + f"{late:.1%} of deliveries >2 ms late"
            if srv.get("max_gap", 0) > 1.0:
                note += (", " if note else "") + f"longest stall {srv['max_gap']:.1f} s"
            mss = f["client"].get("mss")
            if mss:
                # the most payload the link can carry at this packet size
                ceiling = spec["rate"] * mss / LINK_MTU
                ceil = f"{mss / LINK_MTU:.1%} ({mss} B)"
                wire = f"{g / ceiling:.1%}"
            else:
                ceil = wire = "-"
            rows.append([spec["name"], f["flow"], fmt_mbit(g), f"{g / spec['rate']:.1%}", ceil, wire,
                         f"{srv['bytes'] / 1e6:.1f} MB ok", qd, emu, rtx, note])
    return rows


def queueing_delay(run) -> float | None:
    """Median ping RTT under load minus the idle RTT, ms (None without pings)."""
    base, loaded = run.get("ping_base_ms"), run.get("ping_loaded_ms")
    if not base or not loaded or run["saturated"]:
        return None
    return statistics.median(loaded) - base


def fairness_rows(results) -> list[list[str]]:
    rows = []
    for r in results:
        run = r["run"]
        flows = run["flows"]
        names = " + ".join(f["flow"] for f in flows)
        qd = queueing_delay(run)
        qd = f"{qd:.1f}" if qd is not None else "-"
        if run["saturated"]:
            seen = " / ".join(fmt_mbit(f.get("window_goodput")) for f in flows)
            rows.append([r["link"]["name"], names, "refused", "-", qd,
                         "emulator was the limit: " + "; ".join(run["saturated"])
                         + (f" (measured {seen} Mbit/s)" if "window" in run else "")])
            continue
        bad = [f["status"] for f in flows if f["status"] != "ok"]
        if bad or "window" not in run:
            rows.append([r["link"]["name"], names, "-", "-", qd, "; ".join(bad) or "no overlap"])
            continue
        gs = [f["window_goodput"] for f in flows]
        each = " / ".join(fmt_mbit(g) for g in gs)
        if r["kind"] == "jain":
            metric = f"Jain {jain(gs):.3f}"
        else:
            metric = f"share {gs[0] / gs[1]:.2f}" if gs[1] else "share inf"
        rows.append([r["link"]["name"], names, each, metric, qd,
                     f"{(run['window'][1] - run['window'][0]):.1f} s window, "
                     f"{sum(gs) / r['link']['rate']:.0%} of link used"])
    return rows


def md_table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


SINGLE_HEADER = ["Link", "Flow", "Goodput Mbit/s", "% of link (payload / link rate)",
                 "Payload ceiling (MSS / 1500)", "% of ceiling (link use)", "Verified",
                 "Queueing delay (ping) ms", "Emulator queue wait ms",
                 "Gannet retransmits / RTOs", "Note"]
FAIR_HEADER = ["Link", "Flows", "Goodput Mbit/s (each)", "Fairness", "Queueing delay (ping) ms", "Note"]
LATENCY_HEADER = ["Link", "Flow(s)", "Queueing delay (ping) ms", "Emulator queue wait ms",
                  "vs kernel TCP cubic", "vs kernel TCP bbr"]


def latency_rows(report) -> list[list[str]]:
    """Queueing delay each flow (or pair) adds on a loss-free link, beside the
    kernel flows measured on the same link in the same run."""
    rows = []
    runs = [(r["link"], [f["flow"] for f in r["run"]["flows"]], r["run"])
            for r in report["single"] + report["fairness"] if r["link"]["loss"] == 0]
    for link in {lk["name"]: lk for lk, _, _ in runs}.values():
        here = [(names, run) for lk, names, run in runs if lk["name"] == link["name"]]
        kernel = {names[0]: queueing_delay(run) for names, run in here
                  if len(names) == 1 and names[0].startswith("kernel TCP")}
        for names, run in here:
            qd = queueing_delay(run)
            if qd is None:
                continue
            vs = []
            for k in ("kernel TCP cubic", "kernel TCP bbr"):
                ref = kernel.get(k)
                vs.append(f"{qd - ref:+.1f} ms" if ref is not None and names != [k] else "-")
            rows.append([link["name"], " + ".join(names), f"{qd:.1f}",
                         f"{run['link_stats']['queue_delay']['mean'] * 1e3:.1f}", *vs])
    return rows


def markdown(report) -> str:
    lines = [f"Command: `{report['command']}`", "",
             f"Machine: {report['machine']}", "",
             "Links: " + "; ".join(f"**{s['name']}** {s['describe']}" for s in report["links"]),
             "", md_table(SINGLE_HEADER, single_rows(report["single"]))]
    if report["fairness"]:
        lines += ["", md_table(FAIR_HEADER, fairness_rows(report["fairness"]))]
    lat = latency_rows(report)
    if lat:
        lines += ["", "Latency under load (loss-free link; ping alongside from 2 s in, median minus "
                  "idle RTT; last columns: difference to the kernel flow alone):", "",
                  md_table(LATENCY_HEADER, lat)]
    return "\n".join(lines) + "\n"


def machine() -> str:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python "
            f"{platform.python_version()}, load average at start {load}")


# ------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["peer"]:
        p = argparse.ArgumentParser(prog="lossy.py peer")
        p.add_argument("role", choices=["server", "client"])
        p.add_argument("--proto", choices=["gannet", "tcp", "gannet-tcp", "gannet-tun"], required=True)
        p.add_argument("--bind", default="", help="the client's address (the TUN carrier's own)")
        p.add_argument("--cc", default="")
        p.add_argument("--host", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--seconds", type=float, default=30)
        p.add_argument("--insecure", action="store_true")
        a = p.parse_args(argv[1:])
        try:
            (peer_server if a.role == "server" else peer_client)(a)
        except Exception as exc:
            diag = [_diag(sock) for sock in _PEER_SOCKETS]
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "diag": diag}, default=repr), flush=True)
            raise
        return 0

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="bulk time per flow (default 30)")
    p.add_argument("--quick", action="store_true", help="8 s per flow")
    p.add_argument("--links", default=",".join(s.name for s in LINKS),
                   help="subset of " + ",".join(s.name for s in LINKS))
    p.add_argument("--gannet-cc", default=None,
                   help="Gannet controllers, comma-separated (default: all available)")
    p.add_argument("--tcp-cc", default="cubic,bbr")
    p.add_argument("--gannet-tcp-cc", default="",
                   help="also run Gannet on the TCP wire (raw sockets) to a kernel receiver "
                   "with these controllers, e.g. bbr")
    p.add_argument("--gannet-tun-cc", default="",
                   help="also run Gannet on the TCP wire with the TUN carrier to a kernel receiver "
                   "with these controllers, e.g. bbr")
    p.add_argument("--insecure", action="store_true",
                   help="Gannet flows in clear (default: encrypted, as Gannet runs by default)")
    p.add_argument("--also-insecure", action="store_true",
                   help="each Gannet flow twice: encrypted, and in clear beside it in the same run")
    p.add_argument("--no-fairness", action="store_true")
    p.add_argument("--fairness-cc", default=None,
                   help="Gannet controllers for the fairness runs, comma-separated or 'all' "
                        "(default: the default controller, bbr, and newreno)")
    p.add_argument("--pairs", default="jain,share",
                   help="fairness runs: jain (two Gannet flows), share (Gannet beside kernel CUBIC)")
    p.add_argument("--retries", type=int, default=1,
                   help="re-runs when the emulator was the limit (default 1)")
    p.add_argument("--late-fraction", type=float, default=0.05,
                   help="refuse a row when more than this share of the emulator's timed "
                        "deliveries were over 2 ms late (default 0.05; CPU and kernel-drop "
                        "checks always apply)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("lossy.py needs root (netlab builds network namespaces)", file=sys.stderr)
        return 2
    seconds = 8.0 if args.quick else args.seconds
    specs = [s for s in LINKS if s.name in args.links.split(",")]
    gcc = [c for c in args.gannet_cc.split(",") if c] if args.gannet_cc is not None else gannet_controllers()
    if args.fairness_cc is None:
        fcc = [c for c in (default_controller(), "newreno") if c in gannet_controllers()]
        fcc = list(dict.fromkeys(fcc))
    else:
        fcc = gannet_controllers() if args.fairness_cc == "all" else args.fairness_cc.split(",")
    tcc = [c for c in args.tcp_cc.split(",") if c]
    missing = ensure_tcp_cc(tcc + (["cubic"] if not args.no_fairness else []))
    for name, why in missing.items():
        print(f"skipping kernel TCP {name}: {why}", file=sys.stderr)
    tcc = [c for c in tcc if c not in missing]
    modes = [False, True] if args.also_insecure else [args.insecure]
    flows = ([Flow("gannet", c, insecure) for c in gcc for insecure in modes]
             + [Flow("tcp", c) for c in tcc]
             + [Flow("gannet-tcp", c) for c in args.gannet_tcp_cc.split(",") if c]
             + [Flow("gannet-tun", c) for c in args.gannet_tun_cc.split(",") if c])
    # The peers keep their identity and pinned keys in a directory of this
    # run's own (the client trusts the server on first use there), never in
    # the user's: the first flow pins, later flows find the same key.
    config_home = tempfile.mkdtemp(prefix="gannet-lossy-")
    atexit.register(shutil.rmtree, config_home, True)
    os.environ["XDG_CONFIG_HOME"] = config_home
    command = "python bench/lossy.py " + " ".join(argv)
    report = {"command": command.strip(), "machine": machine(), "seconds": seconds,
              "links": [{"name": s.name, "describe": s.describe()} for s in specs],
              "single": [], "fairness": []}
    print(f"{report['machine']}; {seconds:g} s per flow", flush=True)
    seed = args.seed
    for spec in specs:
        link = {"name": spec.name, "rate": spec.rate, "rtt": spec.rtt, "loss": spec.loss}
        print(f"{spec.name}: {spec.describe()}", flush=True)
        for f in flows:
            seed += 10
            res = run_with_retry(spec, [f], seconds, seed, args.retries, ping=spec.loss == 0,
                                 late_fraction=args.late_fraction)
            report["single"].append({"link": link, "run": res})
            fl = res["flows"][0]
            extra = ""
            if res.get("ping_loaded_ms"):
                extra = (f", ping {statistics.median(res['ping_loaded_ms']):.1f} ms "
                         f"(idle {res['ping_base_ms']:.1f})")
            print(f"  {f.label:22} {fmt_mbit(fl.get('goodput'))} Mbit/s {fl['status']}{extra}"
                  + (f" [saturated: {res['saturated']}]" if res["saturated"] else ""), flush=True)
        if args.no_fairness:
            continue
        pairs = ([("jain", [Flow("gannet", c, args.insecure), Flow("gannet", c, args.insecure)])
                  for c in fcc] if "jain" in args.pairs else [])
        if "cubic" not in missing and "share" in args.pairs:
            pairs += [("share", [Flow("gannet", c, args.insecure), Flow("tcp", "cubic")]) for c in fcc]
        for kind, pair in pairs:
            seed += 10
            res = run_with_retry(spec, pair, seconds, seed, args.retries, ping=spec.loss == 0,
                                 late_fraction=args.late_fraction)
            entry = {"link": link, "kind": kind, "run": res}
            report["fairness"].append(entry)
            row = fairness_rows([entry])[0]
            print(f"  {row[1]:40} {row[2]} Mbit/s {row[3]} {row[5]}"
                  + (f", queueing {row[4]} ms" if row[4] != "-" else ""), flush=True)
    md = markdown(report)
    print()
    print(md)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        args.markdown.write_text(md)
    bad = [f for r in report["single"] + report["fairness"] for f in r["run"]["flows"]
           if f["status"].startswith(("FAIL", "error"))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
