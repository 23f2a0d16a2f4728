"""CPU per 64-byte round trip over the asyncio streams API, client and server
on one event loop over loopback UDP: both sides' adapter + core cost, without
the cross-process wake-ups that make bench/compare.py's latency noisy.

    python bench/aio_cost.py 10000
    python bench/aio_cost.py 10000 --uvloop --insecure

Instructions rather than CPU time (valgrind; steady on a loaded machine):
the difference between a run of N round trips and a run of none, over N.

    valgrind --tool=cachegrind --cache-sim=no python bench/aio_cost.py 2000 --uvloop --insecure
    valgrind --tool=cachegrind --cache-sim=no python bench/aio_cost.py 0 --uvloop --insecure
"""
import argparse, asyncio, contextlib, time
import gannet

async def main(n, insecure, measured=contextlib.nullcontext):
    """`measured`: a context manager entered around the N measured round
    trips (bench/aio_lines.py traces them); returns the datagrams sent then."""
    config = gannet.Config(insecure=insecure)

    async def echo(r, w):
        while True:
            try:
                m = await r.readexactly(64)
            except asyncio.IncompleteReadError:
                break
            w.write(m)
            await w.drain()
        w.close()
    srv = await gannet.start_server(echo, "127.0.0.1", 0, config=config)
    port = srv.addresses[0][1] if hasattr(srv, "addresses") else srv.sockets[0].getsockname()[1]
    r, w = await gannet.open_connection("127.0.0.1", port, config=config)
    msg = b"x" * 64
    async def rounds(k):
        for _ in range(k):
            w.write(msg)
            await w.drain()
            await r.readexactly(64)
    await rounds(200)
    cep, sep = w.get_extra_info("endpoint").ep, srv.endpoint.ep
    sent0 = cep.stats.datagrams_sent + sep.stats.datagrams_sent
    t = time.process_time()
    with measured():
        await rounds(n)
    cpu = time.process_time() - t
    sent = cep.stats.datagrams_sent + sep.stats.datagrams_sent - sent0
    if n:
        print(f"{cpu / n * 1e6:.1f} us CPU per round trip (both sides, one loop), "
              f"{sent / n:.2f} datagrams per round trip")
    w.close()
    srv.close()
    return sent


def parse_args(doc: str, count: int, uvloop: bool) -> argparse.Namespace:
    """The command line of this workload's scripts (this one and
    bench/aio_lines.py), with their own defaults: round trips, the loop
    (`--uvloop` / `--no-uvloop`), `--insecure`."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("count", type=int, nargs="?", default=count, help="round trips (after 200 to settle)")
    p.add_argument("--uvloop", action=argparse.BooleanOptionalAction, default=uvloop,
                   help="on uvloop (as Gannet's own programs run), or on asyncio's own loop")
    p.add_argument("--insecure", action="store_true", help="no encryption (the plaintext row)")
    return p.parse_args()


def run(coro, uvloop: bool):
    """`coro` on uvloop's loop or asyncio's."""
    factory = None
    if uvloop:
        import uvloop as _uvloop
        factory = _uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


if __name__ == "__main__":
    args = parse_args(__doc__, 10000, uvloop=False)
    run(main(args.count, args.insecure), args.uvloop)
