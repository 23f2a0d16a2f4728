"""redis-benchmark GET through `gannet tunnel` across a lossy netlab link,
a row per tunnel client mode: what head-of-line blocking between the
channels of one Gannet connection (mux) costs against a Gannet connection
per TCP connection (stream).

Needs root (a `gannet.netlab` lab: two network namespaces joined by the
project's user-space link emulator), redis-server and redis-benchmark.
redis-server and the tunnel server run in namespace b, redis-benchmark
and the tunnel client in namespace a; the link has the same delay and
random loss both ways. Each row is a fresh pair of tunnel processes; with
--repeat N the modes alternate round by round and the summary gives
medians.

    sudo .venv/bin/python bench/tunnel_lossy.py                       # 20 ms RTT, 1 % loss
    sudo .venv/bin/python bench/tunnel_lossy.py --loss 0 --delay 0.01  # the same RTT without loss
    sudo .venv/bin/python bench/tunnel_lossy.py --bulk 2   # beside 2 clients SETting 100 KB values

With --bulk N, N more redis-benchmark clients SET values of --bulk-size
bytes through the same tunnel for the whole measurement (started first,
stopped after): the GET requests then share the uplink with bulk uploads,
the case where a mux connection's head-of-line blocking holds small
requests behind a lost datagram of someone else's upload.

Reported per row: requests per second and redis-benchmark's latency
percentiles (p50, p99, max, in ms).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))

from gannet.netlab import LinkConfig, Netlab  # noqa: E402

REDIS_PORT = 6379
UDP_PORT = 7000
TCP_PORT = 6380


def wait_port(lab: Netlab, node: str, port: int, udp: bool = False, limit: float = 15.0) -> None:
    flag = "-uln" if udp else "-tln"
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        out = lab.run(node, ["ss", "-H", flag, f"sport = :{port}"], timeout=5).stdout
        if out.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {node}:{port}")


def row(lab: Netlab, mode: str, clients: int, requests: int, src: Path,
        bulk: int = 0, bulk_size: int = 100_000) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    gannet = [sys.executable, "-m", "gannet", "tunnel"]
    procs = []
    try:
        procs.append(lab.popen("b", gannet + ["server", "--listen", f"{lab.addr('b')}:{UDP_PORT}",
                                              "--target", f"127.0.0.1:{REDIS_PORT}", "--quiet"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(lab, "b", UDP_PORT, udp=True)
        procs.append(lab.popen("a", gannet + ["client", "--listen", f"127.0.0.1:{TCP_PORT}",
                                              "--server", f"{lab.addr('b')}:{UDP_PORT}", "--quiet",
                                              "--mode", mode],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(lab, "a", TCP_PORT)
        if bulk:
            procs.append(lab.popen("a", ["redis-benchmark", "-h", "127.0.0.1", "-p", str(TCP_PORT),
                                         "-t", "set", "-c", str(bulk), "-d", str(bulk_size),
                                         "-n", "100000000", "-q"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(2)  # (the uploads under way)
        out = lab.run("a", ["redis-benchmark", "-h", "127.0.0.1", "-p", str(TCP_PORT), "-t", "get",
                            "-c", str(clients), "-n", str(requests), "--csv"], timeout=600)
        if out.returncode:
            raise RuntimeError(f"redis-benchmark failed: {out.stderr.strip()!r}")
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        r = rows[-1]
        return {"rps": float(r["rps"]), "p50_ms": float(r["p50_latency_ms"]),
                "p99_ms": float(r["p99_latency_ms"]), "max_ms": float(r["max_latency_ms"])}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--delay", type=float, default=0.01, help="one-way delay, seconds (default 0.01)")
    p.add_argument("--loss", type=float, default=0.01, help="random loss each way (default 0.01)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--modes", default="mux,stream")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bulk", type=int, default=0, metavar="N",
                   help="N more clients uploading (SET) throughout")
    p.add_argument("--bulk-size", type=int, default=100_000, metavar="BYTES")
    p.add_argument("--src", type=Path, default=SRC)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    for prog in ("redis-server", "redis-benchmark", "ss"):
        if shutil.which(prog) is None:
            print(f"{prog} is not installed", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("needs root (a netlab lab)", file=sys.stderr)
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    link = LinkConfig(delay=args.delay, loss=args.loss)
    rounds = []
    with Netlab(link=link, seed=args.seed) as lab:
        lab.popen("b", ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(lab, "b", REDIS_PORT)
        for r in range(args.repeat):
            out = {}
            for mode in modes:
                out[mode] = res = row(lab, mode, args.clients, args.requests, args.src,
                                      args.bulk, args.bulk_size)
                print(f"round {r + 1}: {mode:6s} {res['rps']:9,.0f} req/s, p50 {res['p50_ms']:.1f} ms, "
                      f"p99 {res['p99_ms']:.1f} ms, max {res['max_ms']:.1f} ms", flush=True)
            rounds.append(out)
    medians = {m: {k: statistics.median(r[m][k] for r in rounds) for k in rounds[0][m]} for m in modes}
    link_text = f"{2 * args.delay * 1000:g} ms RTT, {args.loss:.1%} loss each way"
    if args.bulk:
        link_text += f", beside {args.bulk} clients uploading {args.bulk_size:,} B values"
    print(f"medians of {args.repeat} ({link_text}): " + "; ".join(
        f"{m} {v['rps']:,.0f} req/s, p50 {v['p50_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms"
        for m, v in medians.items()))
    if args.json:
        args.json.write_text(json.dumps({"clients": args.clients, "requests": args.requests,
                                         "delay": args.delay, "loss": args.loss,
                                         "bulk": args.bulk, "bulk_size": args.bulk_size,
                                         "rounds": rounds, "medians": medians}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
