"""Side-by-side transport benchmark: Gannet against kernel TCP, raw UDP, KCP, ENet, QUIC.

Each transport runs the same workloads in one invocation, each run as a
server process plus a client process on loopback, each bounded by a timeout:

* bulk: the client streams a deterministic pseudo-random pattern; both sides
  hash it (CRC32C over large chunks) and the byte count and checksum must
  match for a reliable transport;
* ping-pong: 64-byte messages echoed one at a time; round-trip percentiles.

    python bench/compare.py --bytes 1G            # full run
    python bench/compare.py --quick               # under a minute
    python bench/compare.py --quick --transports tcp,udp --json out.json

Sizes take binary suffixes (K, M, G = KiB, MiB, GiB); rates are MB/s with
MB = 10**6 bytes; CPU is CPU-seconds of both processes per 10**9 bytes.
Exit status: 0 when every reliable transport that ran verified its stream,
1 when any verification failed or a run errored (a transport whose package
is missing is reported as not available and does not fail the run).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import machine_info
from gannet import units
from rounds import COLUMNS as SUMMARY_COLUMNS
from rounds import summarize as rounds_summary
from rounds import summary_markdown, summary_rows

HERE = Path(__file__).resolve().parent


@dataclass
class Transport:
    name: str
    module: str
    kind: str  # "reliable" or "ceiling"
    label: str
    extra: list[str] = field(default_factory=list)
    slow: bool = False  # gets --slow-bytes and the time limit
    pingpong: bool = True
    bulk: bool = True
    note: str = ""


TRANSPORTS = [
    Transport("tcp", "run_tcp.py", "reliable", "kernel TCP"),
    Transport("udp", "run_udp.py", "ceiling", "UDP sendto loop",
              ["--mode", "loop"], note="plain Python loop of 1400-byte sendto"),
    Transport("gso", "run_udp.py", "ceiling", "UDP GSO+GRO",
              ["--mode", "gso"], pingpong=False,
              note="UDP_SEGMENT 64 KB sends of 1400-byte segments, UDP_GRO receive"),
    Transport("udpaio", "run_udp.py", "ceiling", "UDP asyncio echo",
              ["--mode", "aio"], bulk=False,
              note="asyncio DatagramProtocol echo, uvloop when installed: the event loop's "
                   "own share of a round trip, no protocol"),
    Transport("kcp", "run_kcp.py", "reliable", "KCP (kcp)"),
    Transport("enet", "run_enet.py", "reliable", "ENet (pyenet)"),
    Transport("quic", "run_quic.py", "reliable", "QUIC (aioquic)", slow=True),
    Transport("gannet", "run_gannet.py", "reliable", "Gannet", slow=True,
              note="encrypted and authenticated (the default)"),
    Transport("gannet-insecure", "run_gannet.py", "reliable", "Gannet --insecure", ["--insecure"],
              slow=True, note="plaintext: the same runs without encryption"),
]
BY_NAME = {t.name: t for t in TRANSPORTS}


def fmt_size(n: int) -> str:
    for suffix, m in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= m:
            v = n / m
            return f"{v:.0f} {suffix}" if v == int(v) else f"{v:.1f} {suffix}"
    return f"{n} B"


# ---------------------------------------------------------------- processes


class Proc:
    """One runner process: stdout lines go to a queue, rusage from wait4."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.p = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=HERE, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self.result: dict[str, Any] | None = None
        self.rusage = None
        self.status: int | None = None
        self.threads = [threading.Thread(target=self._pump_out, daemon=True),
                        threading.Thread(target=self._pump_err, daemon=True)]
        for th in self.threads:
            th.start()

    def _pump_out(self) -> None:
        for line in self.p.stdout:
            if line.startswith("RESULT "):
                try:
                    self.result = json.loads(line[7:])
                except ValueError:
                    self.stderr.append("bad RESULT line: " + line)
            self.lines.put(line)
        self.lines.put(None)

    def _pump_err(self) -> None:
        for line in self.p.stderr:
            if len(self.stderr) < 200:
                self.stderr.append(line)

    def wait_ready(self, deadline: float) -> int | None:
        """The port from the READY line, or None (exited, timed out, unavailable)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            if line.startswith("READY "):
                return int(line.split()[1])
            if line.startswith("RESULT "):
                time.sleep(0.05)  # let the pump parse it
                return None

    def poll(self) -> bool:
        if self.status is not None:
            return True
        pid, status, ru = os.wait4(self.p.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.status = os.waitstatus_to_exitcode(status)
        self.p.returncode = self.status
        self.rusage = ru
        return True

    def kill(self) -> None:
        if self.status is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cpu_total(self) -> float | None:
        if self.rusage is None:
            return None
        return self.rusage.ru_utime + self.rusage.ru_stime

    def tail(self) -> str:
        return "".join(self.stderr[-6:]).strip()


# --pin: the CPUs (taskset) of the server and the client; "" leaves it to the scheduler.
PINS = {"none": ("", ""), "same": ("1", "1"), "split": ("0", "1")}
pin = PINS["none"]


def run_pair(t: Transport, common: list[str], server_extra: list[str],
             client_extra: list[str], timeout: float) -> dict[str, Any]:
    """Start the server, then the client; wait for both within ``timeout``."""
    py = sys.executable
    base = [py, str(HERE / t.module)]
    deadline = time.monotonic() + timeout
    srv = Proc((["taskset", "-c", pin[0]] if pin[0] else []) + base
               + ["server", *t.extra, *common, *server_extra])
    procs = [srv]
    out: dict[str, Any] = {}
    try:
        port = srv.wait_ready(min(deadline, time.monotonic() + 30))
        if port is None:
            srv.kill()
            while not srv.poll():
                time.sleep(0.01)
            if srv.result and "unavailable" in srv.result:
                return {"unavailable": srv.result["unavailable"]}
            return {"error": "server did not start: " + (srv.tail() or "no output")}
        cli = Proc((["taskset", "-c", pin[1]] if pin[1] else []) + base
                   + ["client", *t.extra, *common, "--port", str(port), *client_extra])
        procs.append(cli)
        while time.monotonic() < deadline:
            if all(p.poll() for p in procs):
                break
            if cli.status not in (None, 0) and srv.status is None:
                time.sleep(0.5)  # give the server a moment, then stop it
                srv.poll()
                break
            time.sleep(0.005)
        timed_out = not all(p.poll() for p in procs)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            for _ in range(500):
                if p.poll():
                    break
                time.sleep(0.01)
    for p in procs:  # the pumps read the last lines after the process exits
        for th in p.threads:
            th.join(timeout=2.0)
    for role, p in (("server", srv), ("client", cli)):
        out[role] = p.result or {}
        out[role + "_cpu_total"] = p.cpu_total()
        out[role + "_exit"] = p.status
        if (p.status not in (0, None) or not p.result) and p.tail():
            out[role + "_stderr"] = p.tail()
    for role in ("server", "client"):
        if "unavailable" in out[role]:
            return {"unavailable": out[role]["unavailable"]}
    if timed_out:
        out["error"] = f"timed out after {timeout:.0f} s"
    elif not out["server"] or not out["client"]:
        which = "server" if not out["server"] else "client"
        out["error"] = f"{which} failed: " + (out.get(which + "_stderr") or "no result")
    return out


# ---------------------------------------------------------------- workloads


def bulk(t: Transport, args, nbytes: int) -> dict[str, Any]:
    common = ["--workload", "bulk", "--bytes", str(nbytes)]
    client_extra: list[str] = []
    if t.slow and args.time_limit > 0:
        client_extra += ["--time-limit", str(args.time_limit)]
    if args.corrupt_at >= 0:
        client_extra += ["--corrupt-at", str(args.corrupt_at)]
    common += transport_options(t, args)
    r = run_pair(t, common, [], client_extra, args.timeout)
    row: dict[str, Any] = {"workload_bytes": nbytes}
    if "unavailable" in r or "error" in r:
        row.update({k: r[k] for k in ("unavailable", "error") if k in r})
        row["detail"] = {k: v for k, v in r.items() if k.endswith("stderr")}
        return row
    s, cl = r["server"], r["client"]
    sent, got = cl.get("bytes", 0), s.get("bytes", 0)
    elapsed = s.get("t_end", 0) - cl.get("t_start", 0)
    row.update({
        "sent_bytes": sent,
        "delivered_bytes": got,
        "seconds": elapsed,
        "goodput_MBps": got / elapsed / 1e6 if elapsed > 0 and got else 0.0,
        "cpu_s": cl.get("cpu", 0) + s.get("cpu", 0),
        "cpu_s_total_wait4": (r["client_cpu_total"] or 0) + (r["server_cpu_total"] or 0),
        "crc_sent": cl.get("crc"),
        "crc_received": s.get("crc"),
        "hash": s.get("hash"),
        "time_limited": bool(t.slow and args.time_limit > 0 and sent < nbytes),
    })
    row["cpu_s_per_GB"] = row["cpu_s"] / (got / 1e9) if got else None
    row["cpu_s_client"], row["cpu_s_server"] = cl.get("cpu", 0), s.get("cpu", 0)
    if "counters" in cl or "counters" in s:  # Gannet's (bench/gannet_counters.py)
        row["counters"] = {"sender": cl.get("counters"), "receiver": s.get("counters")}
    if "api" in cl:  # which of a transport's APIs ran (Gannet: streams or socket)
        row["api"] = cl["api"]
    intact = got == sent and got > 0 and s.get("crc") == cl.get("crc")
    if t.kind == "reliable":
        row["verified"] = intact
        if not intact:
            row["error"] = (f"VERIFICATION FAILED: received {got} of {sent} bytes, "
                            f"crc {s.get('crc')} vs {cl.get('crc')}")
    else:
        row["verified"] = None  # ceilings are not reliable transports
        row["delivered_fraction"] = got / sent if sent else 0.0
        row["intact"] = intact
    for k in ("client_exit", "server_exit"):
        if r.get(k):
            row.setdefault("error", f"{k.split('_')[0]} exited with {r[k]}")
    return row


def pingpong(t: Transport, args) -> dict[str, Any]:
    common = ["--workload", "pingpong", "--count", str(args.count),
              "--size", str(args.msg_size), *transport_options(t, args)]
    r = run_pair(t, common, [], [], args.timeout)
    if "unavailable" in r or "error" in r:
        return {k: r[k] for k in ("unavailable", "error") if k in r}
    cl = r["client"]
    row = {k: cl.get(k) for k in ("rtts", "p50_us", "p90_us", "p99_us", "max_us", "mean_us",
                                  "bad_echoes", "lost")}
    if cl.get("cpu") and cl.get("rtts"):  # the client's CPU over the round trips
        row["client_cpu_us"] = round(cl["cpu"] / cl["rtts"] * 1e6, 1)
    if "api" in cl:
        row["api"] = cl["api"]
    if cl.get("bad_echoes"):
        row["error"] = f"VERIFICATION FAILED: {cl['bad_echoes']} echoes differ"
    elif cl.get("rtts") != args.count:
        row["error"] = f"only {cl.get('rtts')} of {args.count} round trips"
    return row


def transport_options(t: Transport, args) -> list[str]:
    opts: list[str] = []
    if t.name in ("gannet", "gannet-insecure"):
        if args.gannet_mtu:
            opts += ["--mtu", str(args.gannet_mtu)]
        if args.gannet_cc:
            opts += ["--cc", args.gannet_cc]
        if args.gannet_busy_poll is not None:
            opts += ["--busy-poll", str(args.gannet_busy_poll)]
        if args.gannet_sample_ms:
            opts += ["--sample-ms", str(args.gannet_sample_ms)]
        opts += ["--api", args.gannet_api]
        if not args.no_uvloop:  # like aioquic: uvloop when installed
            opts += ["--uvloop"]
    if t.name in ("quic", "udpaio") and args.no_uvloop:
        opts += ["--no-uvloop"]
    return opts


# ---------------------------------------------------------------- reporting


COLUMNS = ["Transport", "Kind", "Bulk bytes", "Goodput MB/s", "x TCP", "CPU s/GB",
           "Verified", "RTT p50 us", "p90 us", "p99 us", "p50 x UDP"]


def table_rows(results: list[dict[str, Any]]) -> tuple[list[list[str]], list[str]]:
    tcp = next((r["bulk"].get("goodput_MBps") for r in results
                if r["name"] == "tcp" and r.get("bulk")), None)
    udp = next((r["pingpong"].get("p50_us") for r in results
                if r["name"] == "udp" and r.get("pingpong")), None)
    rows, notes = [], []
    for r in results:
        b, pp = r.get("bulk") or {}, r.get("pingpong") or {}
        label = r["label"]
        if r.get("unavailable"):
            notes.append(f"{r['name']}: not available ({r['unavailable']})")
            rows.append([label, r["kind"], "-", "n/a", "-", "-", "not available",
                         "-", "-", "-", "-"])
            continue
        gp = b.get("goodput_MBps")
        size = fmt_size(b.get("sent_bytes") or b.get("workload_bytes", 0)) if b else "-"
        if b.get("time_limited"):
            size += " (time-limited)"
        if r["kind"] == "ceiling":
            frac = b.get("delivered_fraction")
            ver = f"ceiling, {frac * 100:.1f}% delivered" if frac is not None else "ceiling"
        elif b.get("verified"):
            ver = "ok"
        elif b:
            ver = "FAIL" if b.get("verified") is False else "error"
        else:
            ver = "-"
        for wl, d in (("bulk", b), ("ping-pong", pp)):
            if d.get("error"):
                notes.append(f"{r['name']} {wl}: {d['error']}")
        rows.append([
            label, r["kind"], size,
            f"{gp:,.1f}" if gp else "-",
            f"{gp / tcp:.3f}" if gp and tcp else "-",
            f"{b['cpu_s_per_GB']:.2f}" if b.get("cpu_s_per_GB") else "-",
            ver,
            f"{pp['p50_us']:.0f}" if pp.get("p50_us") else "-",
            f"{pp['p90_us']:.0f}" if pp.get("p90_us") else "-",
            f"{pp['p99_us']:.0f}" if pp.get("p99_us") else "-",
            f"{pp['p50_us'] / udp:.2f}" if pp.get("p50_us") and udp else "-",
        ])
    return rows, notes


def markdown(results, info, command) -> str:
    rows, notes = table_rows(results)
    out = [f"Command: `{command}`", "",
           f"Machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}, "
           f"Python {info['python']}, load average at start "
           f"{' / '.join(f'{x:.2f}' for x in info['loadavg'])}", "",
           "| " + " | ".join(COLUMNS) + " |",
           "|" + "|".join(["---"] * 2 + ["---:"] * 3 + ["---:", "---"] + ["---:"] * 4) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def print_table(results, info, command, title: str = "") -> None:
    rows, notes = table_rows(results)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a project dependency
        print(markdown(results, info, command))
        return
    table = Table(title="Gannet side-by-side benchmark (loopback, one connection)" + title,
                  caption="goodput in MB/s (10^6 B/s); CPU = both processes; "
                          "ceilings are unreliable raw UDP")
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i in (0, 1, 2, 6) else "right")
    for r in rows:
        style = "red" if r[6] in ("FAIL", "error") else None
        table.add_row(*r, style=style)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)
    for n in notes:
        console.print(f"  {n}", markup=False, highlight=False)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bytes", default=None, help="bulk bytes per transport (default 1G; quick 32M)")
    p.add_argument("--slow-bytes", default=None,
                   help="bulk bytes for the pure-Python transports (aioquic, Gannet); "
                        "default 256M, quick 8M")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds after which the slow transports stop sending "
                        "(default 15, quick 3; 0 = none); goodput stays bytes/seconds")
    p.add_argument("--quick", action="store_true", help="small sizes: a quick sanity run")
    p.add_argument("--transports", default=",".join(t.name for t in TRANSPORTS),
                   help="comma-separated subset of: " + ", ".join(BY_NAME))
    p.add_argument("--count", type=int, default=None,
                   help="ping-pong round trips (default 5000, quick 300)")
    p.add_argument("--msg-size", type=int, default=64, help="ping-pong message bytes")
    p.add_argument("--no-pingpong", action="store_true")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run every transport N times, round by round, and add a table of "
                        "medians (ratios taken inside each round)")
    p.add_argument("--no-bulk", action="store_true")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds allowed for one server+client run (default 180, quick 40)")
    p.add_argument("--json", metavar="PATH", help="write all results as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the table as markdown")
    p.add_argument("--gannet-mtu", type=int, default=None,
                   help="Gannet's datagram size (Config.max_datagram_size; path MTU discovery off)")
    p.add_argument("--gannet-cc", default=None,
                   help="Gannet's congestion controller (Config.congestion_control)")
    p.add_argument("--pin", choices=sorted(PINS), default="none",
                   help="taskset: server and client on one CPU (same) or one each (split, "
                        "a quiet machine's placement); default: the scheduler's")
    p.add_argument("--gannet-busy-poll", type=int, default=None, metavar="US",
                   help="Gannet's Config.busy_poll in microseconds (0: off; default: the "
                        "installed default)")
    p.add_argument("--gannet-sample-ms", type=float, default=0.0, metavar="MS",
                   help="Gannet's sender sampled every MS milliseconds, in the JSON's counters "
                        "(bench/gannet_counters.py; 0: off, the default)")
    p.add_argument("--gannet-api", choices=["streams", "socket"], default="streams",
                   help="the Gannet API the runner uses: asyncio streams or the blocking Socket")
    p.add_argument("--gannet-uvloop", action="store_true",
                   help="kept for old command lines: Gannet runs on uvloop unless --no-uvloop")
    p.add_argument("--no-uvloop", action="store_true",
                   help="aioquic, Gannet and the asyncio echo on asyncio's own loop "
                        "(default: uvloop when installed)")
    p.add_argument("--corrupt-at", type=int, default=-1,
                   help="test hook: senders flip the stream byte at this offset, "
                        "which verification must report")
    args = p.parse_args(argv)
    global pin
    pin = PINS[args.pin]

    q = args.quick
    # '32M' is 32 MiB here, as iperf3 counts: kilo=1024
    nbytes = units.parse_size(args.bytes or ("32M" if q else "1G"), kilo=1024)
    slow_bytes = units.parse_size(args.slow_bytes or ("8M" if q else "256M"), kilo=1024)
    slow_bytes = min(slow_bytes, nbytes)
    if args.time_limit is None:
        args.time_limit = 3.0 if q else 15.0
    if args.count is None:
        args.count = 300 if q else 5000
    if args.timeout is None:
        args.timeout = 40.0 if q else 180.0
    names = [n.strip() for n in args.transports.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        p.error(f"unknown transport(s): {', '.join(unknown)}")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")

    command = "python bench/compare.py " + " ".join(argv if argv is not None else sys.argv[1:])
    info = machine_info()
    rounds = []
    for k in range(args.repeat):
        if args.repeat > 1:
            print(f"[{time.strftime('%H:%M:%S')}] round {k + 1} of {args.repeat}",
                  file=sys.stderr, flush=True)
        results = run_round(names, args, nbytes, slow_bytes)
        print_table(results, info, command,
                    title=f" - round {k + 1} of {args.repeat}" if args.repeat > 1 else "")
        rounds.append(results)
    if args.repeat == 1:
        doc: dict[str, Any] = {"command": command, "machine": info, "results": rounds[0]}
        text = markdown(rounds[0], info, command)
    else:
        summary = rounds_summary(rounds)
        print_summary(summary, args.repeat)
        doc = {"command": command, "machine": info, "rounds": rounds, "summary": summary}
        text = "\n".join(
            [markdown(res, info, command) + f"\n(round {k + 1} of {args.repeat})\n"
             for k, res in enumerate(rounds)] + [summary_markdown(summary)])
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)
    failed = any(
        (r.get(w) or {}).get("error") for res in rounds for r in res for w in ("bulk", "pingpong")
    )
    return 1 if failed else 0


def run_round(names: list[str], args, nbytes: int, slow_bytes: int) -> list[dict[str, Any]]:
    """Every transport once, in order: one set of same-run peers."""
    results = []
    for name in names:
        t = BY_NAME[name]
        res: dict[str, Any] = {"name": t.name, "label": t.label, "kind": t.kind,
                               "note": t.note}
        print(f"[{time.strftime('%H:%M:%S')}] {t.label} ...", file=sys.stderr, flush=True)
        if not args.no_bulk and t.bulk:
            res["bulk"] = bulk(t, args, slow_bytes if t.slow else nbytes)
            if "unavailable" in res["bulk"]:
                res["unavailable"] = res["bulk"]["unavailable"]
        if not args.no_pingpong and t.pingpong and "unavailable" not in res:
            res["pingpong"] = pingpong(t, args)
            if "unavailable" in res["pingpong"]:
                res["unavailable"] = res["pingpong"]["unavailable"]
        if "unavailable" in res:
            print(f"{t.name}: not available ({res['unavailable']})", file=sys.stderr)
        results.append(res)
    return results


def print_summary(summary: list[dict[str, Any]], n: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Median of {n} rounds (range in brackets)",
                  caption="ratios are taken inside each round, where the peers shared the "
                          "machine's conditions, then summarised")
    for i, col in enumerate(SUMMARY_COLUMNS):
        table.add_column(col, justify="left" if i < 3 else "right")
    for row in summary_rows(summary):
        table.add_row(*row)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
