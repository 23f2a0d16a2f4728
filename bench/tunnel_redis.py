"""redis-benchmark GET through `gannet tunnel`, against the same through two
plain asyncio TCP relays, and direct.

Three rows, each a fresh redis-benchmark run against one redis-server:

* direct: redis-benchmark -> redis-server;
* asyncio relays: redis-benchmark -> relay -> relay -> redis-server, each
  relay its own process (bench/tcp_relay.py: asyncio streams, read, write,
  drain), the shape of a tunnel's two halves without Gannet between them;
* gannet tunnel: redis-benchmark -> `gannet tunnel client` ~UDP~
  `gannet tunnel server` -> redis-server, a row per client mode (--modes:
  mux, every TCP connection a channel of one Gannet connection; stream, a
  Gannet connection each; "default" passes no --mode, for a tree from
  before the modes).

The relays and the tunnel run on the same event loop (uvloop when
installed, as Gannet's commands do; GANNET_NO_UVLOOP=1 gives asyncio's for
both). With --repeat N the rows run round by round and the summary gives
medians of the same-round ratio tunnel / relays. Each row also reports the
CPU time per request of its two processes (the mean of the two relays, of
the tunnel's client and server; from /proc), which tells a tunnel that
works harder per request from one that waits.

    python bench/tunnel_redis.py                   # 20 clients, 100k requests
    python bench/tunnel_redis.py --repeat 3 --json bench/results/tunnel_redis.json
    python bench/tunnel_redis.py --src /tmp/old/src   # another tree's tunnel
    python bench/tunnel_redis.py --insecure           # the tunnel without encryption
    python bench/tunnel_redis.py --modes mux          # one mode only

Needs redis-server and redis-benchmark on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port: int, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on TCP port {port}") from None
            time.sleep(0.05)


def wait_udp(port: int, limit: float = 15.0) -> None:
    """Until a UDP socket is bound to `port` (Linux: /proc/net/udp*). The
    tunnel client refuses the benchmark's connections while the tunnel
    server is not there yet (an ICMP port unreachable answers its SYN), and
    redis-benchmark then fails ("Could not fetch server CONFIG") or, seen
    once on a loaded machine, spins until the harness's timeout."""
    want = f":{port:04X}"  # local_address is ADDR:PORT in hex
    deadline = time.monotonic() + limit
    while True:
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(table, encoding="ascii") as f:
                    if any(line.split()[1].endswith(want) for line in list(f)[1:]):
                        return
            except OSError:
                continue
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing is bound to UDP port {port}")
        time.sleep(0.05)


def benchmark(port: int, clients: int, requests: int) -> float:
    """redis-benchmark GET through `port`: requests per second."""
    run = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "get", "-c", str(clients),
         "-n", str(requests), "-q"],
        capture_output=True, text=True, timeout=300)
    out = run.stdout
    if run.returncode:
        raise RuntimeError(f"redis-benchmark failed: {run.stderr.strip()!r}")
    m = re.search(r"GET: ([\d.]+) requests per second", out.replace("\r", "\n"))
    if not m:
        raise RuntimeError(f"cannot read redis-benchmark's output: {out!r}")
    return float(m.group(1))


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def cpu(self) -> list[float]:
        """CPU seconds (user + system) each process has used so far (Linux /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        out = []
        for p in self.procs:
            with open(f"/proc/{p.pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / tick)  # utime, stime
        return out

    def measure(self, port: int, clients: int, requests: int) -> tuple[float, float]:
        """redis-benchmark through `port`: (requests per second, CPU
        microseconds per request in each of our processes, their mean)."""
        before = self.cpu()
        rate = benchmark(port, clients, requests)
        used = [b - a for a, b in zip(before, self.cpu())]
        return rate, sum(used) / len(used) / requests * 1e6

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()


def run_relays(redis_port: int, clients: int, requests: int) -> tuple[float, float]:
    procs = Procs()
    try:
        inner, outer = free_port(), free_port()
        relay = [sys.executable, str(HERE / "tcp_relay.py")]
        procs.start(relay + [str(inner), str(redis_port)])
        wait_tcp(inner)
        procs.start(relay + [str(outer), str(inner)])
        wait_tcp(outer)
        return procs.measure(outer, clients, requests)
    finally:
        procs.stop()


def run_tunnel(redis_port: int, clients: int, requests: int, src: Path,
               insecure: bool = False, mode: str = "default") -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    procs = Procs()
    try:
        udp, tcp = free_port(socket.SOCK_DGRAM), free_port()
        gannet = [sys.executable, "-m", "gannet", "tunnel"]
        extra = ["--insecure"] if insecure else []
        procs.start(gannet + ["server", "--listen", f"127.0.0.1:{udp}",
                              "--target", f"127.0.0.1:{redis_port}", "--quiet", *extra], env)
        wait_udp(udp)
        procs.start(gannet + ["client", "--listen", f"127.0.0.1:{tcp}",
                              "--server", f"127.0.0.1:{udp}", "--quiet", *extra,
                              *(["--mode", mode] if mode != "default" else [])], env)
        wait_tcp(tcp)
        return procs.measure(tcp, clients, requests)
    finally:
        procs.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--src", type=Path, default=SRC, help="source tree of the tunnel (PYTHONPATH)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--insecure", action="store_true",
                   help="run the tunnel without encryption (default: encrypted, as `gannet tunnel` is)")
    p.add_argument("--modes", default="mux,stream",
                   help="the tunnel client's modes, a row each (mux, stream, default: no --mode)")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for prog in ("redis-server", "redis-benchmark"):
        if shutil.which(prog) is None:
            print(f"{prog} is not installed", file=sys.stderr)
            return 2
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rounds = []
    try:
        wait_tcp(redis_port)
        subprocess.run(["redis-cli", "-p", str(redis_port), "set", "key:__rand_int__", "x"],
                       capture_output=True, timeout=10)
        for r in range(args.repeat):
            direct = benchmark(redis_port, args.clients, args.requests)
            relays, relays_cpu = run_relays(redis_port, args.clients, args.requests)
            row: dict[str, float] = {
                "direct": direct,
                "asyncio_relays": relays,
                # CPU per request in each relay / tunnel process (their mean)
                "relay_cpu_us": round(relays_cpu, 1),
            }
            text = []
            for mode in modes:
                tunnel, tunnel_cpu = run_tunnel(redis_port, args.clients, args.requests, args.src,
                                                args.insecure, mode)
                row[f"tunnel_{mode}"] = tunnel
                row[f"tunnel_{mode}_over_relays"] = round(tunnel / relays, 3)
                row[f"tunnel_{mode}_cpu_us"] = round(tunnel_cpu, 1)
                text.append(f"gannet tunnel {mode} {tunnel:,.0f} ({tunnel_cpu:.0f} us): "
                            f"{tunnel / relays:.2f}x the relays")
            rounds.append(row)
            print(f"round {r + 1}: direct {direct:,.0f} req/s, asyncio relays {relays:,.0f} "
                  f"({relays_cpu:.0f} us CPU per request and process); "
                  f"{'--insecure' if args.insecure else 'encrypted'}: " + "; ".join(text), flush=True)
    finally:
        redis.terminate()
        redis.wait(10)
    summary = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    if args.repeat > 1:
        print(f"medians of {args.repeat}: direct {summary['direct']:,.0f}, relays "
              f"{summary['asyncio_relays']:,.0f} ({summary['relay_cpu_us']:.0f} us CPU per request "
              "and process); " + "; ".join(
                  f"tunnel {m} {summary[f'tunnel_{m}']:,.0f} ({summary[f'tunnel_{m}_cpu_us']:.0f} us), "
                  f"{summary[f'tunnel_{m}_over_relays']:.2f}x the relays" for m in modes))
    if args.json:
        args.json.write_text(json.dumps({
            "clients": args.clients, "requests": args.requests, "src": str(args.src),
            "tunnel": "insecure" if args.insecure else "encrypted",
            "loop": "asyncio" if os.environ.get("GANNET_NO_UVLOOP") else "uvloop if installed",
            "rounds": rounds, "medians": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
