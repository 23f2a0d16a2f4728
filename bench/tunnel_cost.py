"""CPU and events per request through `gannet tunnel`, everything in one
process on one event loop: a redis-like service (answers each request at
once), the tunnel server, the tunnel client and N clients that each send a
request whenever the answer to their last one arrived (redis-benchmark's
shape). The same run through two plain asyncio TCP relays (bench/tcp_relay.py's
streams loop) and direct gives the peers; their difference is what the
tunnel (or the relays) cost per request, without the cross-process
wake-ups that make bench/tunnel_redis.py noisy.

    python bench/tunnel_cost.py                    # 20 clients, 20,000 requests each row
    python bench/tunnel_cost.py --insecure
    PYTHONPATH=/tmp/old/src python bench/tunnel_cost.py   # another tree
    python bench/tunnel_cost.py --rows relays,mux,stream   # the tunnel's modes, a row each
    python bench/tunnel_cost.py --rows tunnel --requests 2000   # under valgrind:

The row "tunnel" runs the client's default mode (the only one of a tree
from before the modes); "mux" and "stream" choose one.

Instructions rather than CPU time (steady on a loaded machine): a run of N
requests minus a run of none, over N. Under valgrind's slowdown the
tail-loss probe, the RTO and the delayed ACK fire where a real run's do
not (2.3-2.7 datagrams per request instead of 2.1, and the count moves
by 20 thousand between runs): hold them back with the settings below,
and compare the datagrams per request too. `--stats` turns on the limit
accounting Gannet's commands run.

    valgrind --tool=cachegrind --cache-sim=no python bench/tunnel_cost.py --rows tunnel --stats --requests 2000 --set tlp=False --set min_rto=5.0 --set ack_delay=0.4
    valgrind --tool=cachegrind --cache-sim=no python bench/tunnel_cost.py --rows tunnel --stats --requests 0 --set tlp=False --set min_rto=5.0 --set ack_delay=0.4

Counted per request (tunnel row): datagrams, send and receive calls, passes,
timer firings of the endpoints, loop wake-ups.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import os
import sys
import time
from pathlib import Path

if not os.environ.get("PYTHONPATH"):  # (PYTHONPATH=/tmp/old/src: another tree's tunnel)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tcp_relay import loop_factory, relay_to  # (the relay peer of bench/tunnel_redis.py, run in process)

REQUEST = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n"
REPLY = b"$3\r\nxxx\r\n"


class Service(asyncio.Protocol):
    """Answers every complete request at once (requests are small: one per
    chunk unless several arrive together)."""

    delay = 0.0  # --service-delay: answer this long after the request came

    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        n = data.count(b"GET")
        if n:
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self.t.write, REPLY * n)
            else:
                self.t.write(REPLY * n)


class Load(asyncio.Protocol):
    """One client: a request at a time, the next when the answer came."""

    def __init__(self, state):
        self.state = state
        self.got = 0

    def connection_made(self, transport):
        self.t = transport
        self.state["ready"] += 1
        if self.state["ready"] == self.state["clients"]:
            self.state["go"].set_result(None)

    def start(self):
        if self.state["left"] > 0:
            self.state["left"] -= 1
            self.t.write(REQUEST)

    def data_received(self, data):
        self.got += len(data)
        while self.got >= len(REPLY):
            self.got -= len(REPLY)
            st = self.state
            st["done"] += 1
            if st["left"] > 0:
                st["left"] -= 1
                self.t.write(REQUEST)
            elif st["done"] == st["total"]:
                st["end"].set_result(None)


async def start_relay(target_port):
    server = await asyncio.start_server(relay_to(target_port), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def drive(port, clients, requests):
    loop = asyncio.get_running_loop()
    state = {"clients": clients, "ready": 0, "left": requests, "done": 0, "total": requests,
             "go": loop.create_future(), "end": loop.create_future()}
    conns = [await loop.create_connection(lambda: Load(state), "127.0.0.1", port)
             for _ in range(clients)]
    await state["go"]
    # one warm-up request per client, then the measured ones
    warm = {"clients": clients, "ready": clients, "left": clients, "done": 0, "total": clients,
            "go": None, "end": loop.create_future()}
    for _, p in conns:
        p.state = warm
        p.start()
    await warm["end"]
    for _, p in conns:
        p.state = state
    t0, c0 = time.perf_counter(), time.process_time()
    if requests:
        for _, p in conns:
            p.start()
        await state["end"]
    t1, c1 = time.perf_counter(), time.process_time()
    for t, _ in conns:
        t.close()
    await asyncio.sleep(0.05)
    return t1 - t0, c1 - c0


async def row(kind, service_port, args):
    if kind == "direct":
        return await drive(service_port, args.clients, args.requests), None
    if kind == "relays":
        inner, inner_port = await start_relay(service_port)
        outer, outer_port = await start_relay(inner_port)
        try:
            return await drive(outer_port, args.clients, args.requests), None
        finally:
            outer.close()
            inner.close()
    from gannet.apps import tunnel as tun
    from gannet.io.endpoint import AioEndpoint

    timer_calls = [0]
    on_timer = AioEndpoint._on_timer

    def counted(self):
        timer_calls[0] += 1
        on_timer(self)

    AioEndpoint._on_timer = counted  # (the endpoints' timer firings, counted)

    overrides = {"insecure": True} if args.insecure else {}
    for kv in args.set:  # NAME=VALUE, the value as a Python literal (a word stays a string)
        k, _, v = kv.partition("=")
        try:
            overrides[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            overrides[k] = v
    server = await tun.start_tunnel_server(("127.0.0.1", 0), ("127.0.0.1", service_port), **overrides)
    mode = {} if kind == "tunnel" else {"mode": kind}
    client = await tun.start_tunnel_client(("127.0.0.1", 0), server.address, **mode, **overrides)
    try:
        aeps = [server.server.endpoint]
        before = None

        def counts():
            eps = aeps + list(client.endpoints.values())
            out = {}
            for aep in eps:
                st = aep.io_stats
                for k in ("datagrams_sent", "send_calls", "recv_calls", "passes", "loop_calls"):
                    out[k] = out.get(k, 0) + getattr(st, k)
            out["timer_calls"] = timer_calls[0]
            return out

        result = await drive(client.address[1], args.clients, 0)  # connections up
        before = counts()
        result = await drive(client.address[1], args.clients, args.requests)
        after = counts()
        return result, {k: (after[k] - before.get(k, 0)) / max(1, args.requests) for k in after}
    finally:
        await client.close()
        await server.close()


async def main(args):
    Service.delay = args.service_delay
    if args.stats:
        from gannet import observe

        observe.configure(track_limits=True)  # what the stats socket of `gannet tunnel` turns on
    loop = asyncio.get_running_loop()
    service = await loop.create_server(Service, "127.0.0.1", 0)
    port = service.sockets[0].getsockname()[1]
    out = {}
    for kind in args.rows.split(","):
        (wall, cpu), counted = await row(kind, port, args)
        out[kind] = cpu
        n = max(1, args.requests)
        extra = "" if counted is None else "  " + ", ".join(f"{k} {v:.2f}" for k, v in counted.items())
        print(f"{kind:7s} {n / wall if wall else 0:9,.0f} req/s  {cpu / n * 1e6:7.1f} us CPU per request{extra}",
              flush=True)
    if "direct" in out:
        for kind in ("relays", "tunnel", "mux", "stream"):
            if kind in out:
                print(f"{kind} minus direct: {(out[kind] - out['direct']) / max(1, args.requests) * 1e6:.1f} us per request")
    service.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--rows", default="direct,relays,tunnel")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--service-delay", type=float, default=0.0, metavar="S",
                   help="the service answers this long after each request (a slower peer)")
    p.add_argument("--stats", action="store_true",
                   help="limit accounting on, as Gannet's commands have it for the stats socket")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a Gannet setting")
    a = p.parse_args()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main(a))
