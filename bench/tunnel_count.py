"""What one request costs a `gannet tunnel` server, counted, under
redis-benchmark: the tunnel server runs in this process (its endpoint's
IoStats and this process's CPU read before and after), the tunnel client
and redis-server in their own, as in bench/tunnel_redis.py; the limit
accounting is on, as in `gannet tunnel`.

    python bench/tunnel_count.py                 # 20 clients, 30,000 GETs
    python bench/tunnel_count.py --insecure
    python bench/tunnel_count.py --mode stream   # the client's mode (default: the tree's default)

Printed per request: the endpoint's loop wake-ups (readiness, timer and
flush callbacks: `IoStats.loop_calls`), passes, send and receive system
calls, datagrams each way, and CPU. Each request also costs the server
one TCP read and one TCP write to the service (a relay makes two of each).
Needs redis-server and redis-benchmark on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

if not os.environ.get("PYTHONPATH"):  # (PYTHONPATH=/tmp/old/src: another tree's tunnel)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tcp_relay import loop_factory  # (the loop the tunnel's commands use)
from tunnel_redis import free_port, wait_tcp

KEYS = ("loop_calls", "passes", "send_calls", "recv_calls", "datagrams_sent", "datagrams_received")


async def main(args: argparse.Namespace) -> None:
    from gannet import observe
    from gannet.apps import tunnel as tun

    observe.configure(track_limits=True)  # what `gannet tunnel` runs for its stats socket
    extra = ["--insecure"] if args.insecure else []
    procs = []
    try:
        redis_port = free_port()
        procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL))
        await asyncio.to_thread(wait_tcp, redis_port)
        server = await tun.start_tunnel_server(("127.0.0.1", 0), ("127.0.0.1", redis_port),
                                               **({"insecure": True} if args.insecure else {}))
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "gannet", "tunnel", "client", "--listen",
                                       f"127.0.0.1:{port}", "--server", f"127.0.0.1:{server.address[1]}",
                                       "--quiet", *extra, *(["--mode", args.mode] if args.mode else [])]))
        await asyncio.to_thread(wait_tcp, port)
        st = server.server.endpoint.io_stats
        before = {k: getattr(st, k) for k in KEYS}
        t0 = os.times()
        bench = await asyncio.create_subprocess_exec(
            "redis-benchmark", "-p", str(port), "-t", "get", "-c", str(args.clients),
            "-n", str(args.requests), "-q", stdout=subprocess.PIPE)
        out, _ = await bench.communicate()
        t1 = os.times()
        user, system = t1.user - t0.user, t1.system - t0.system
        n = args.requests
        print(out.decode().replace("\r", "\n").strip().splitlines()[-1])
        print(", ".join(f"{k} {(getattr(st, k) - before[k]) / n:.3f}" for k in KEYS)
              + f"; CPU {(user + system) / n * 1e6:.1f} us per request (the tunnel server; "
              f"{user / n * 1e6:.1f} user, {system / n * 1e6:.1f} system)")
        await server.close()
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=30_000)
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--mode", default=None, help="the tunnel client's --mode (mux, stream)")
    a = p.parse_args()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main(a))
