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


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("count", type=int, nargs="?", default=10000, help="round trips (after 200 to settle)")
    p.add_argument("--uvloop", action="store_true", help="on uvloop (as Gannet's own programs run)")
    p.add_argument("--insecure", action="store_true", help="no encryption (the plaintext row)")
    args = p.parse_args()
    factory = None
    if args.uvloop:
        import uvloop
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(args.count, args.insecure))
