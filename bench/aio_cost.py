"""CPU per 64-byte round trip over the asyncio streams API, client and server
on one event loop over loopback UDP: both sides' adapter + core cost, without
the cross-process wake-ups that make bench/compare.py's latency noisy.

    python bench/aio_cost.py 10000
"""
import asyncio, sys, time
import gannet

async def main(n):
    async def echo(r, w):
        while True:
            try:
                m = await r.readexactly(64)
            except asyncio.IncompleteReadError:
                break
            w.write(m)
            await w.drain()
        w.close()
    srv = await gannet.start_server(echo, "127.0.0.1", 0)
    port = srv.addresses[0][1] if hasattr(srv, "addresses") else srv.sockets[0].getsockname()[1]
    r, w = await gannet.open_connection("127.0.0.1", port)
    msg = b"x" * 64
    async def rounds(k):
        for _ in range(k):
            w.write(msg)
            await w.drain()
            await r.readexactly(64)
    await rounds(500)
    cep, sep = w.get_extra_info("endpoint").ep, srv.endpoint.ep
    sent0 = cep.stats.datagrams_sent + sep.stats.datagrams_sent
    t = time.process_time()
    await rounds(n)
    cpu = time.process_time() - t
    sent = cep.stats.datagrams_sent + sep.stats.datagrams_sent - sent0
    print(f"{cpu / n * 1e6:.1f} us CPU per round trip (both sides, one loop), "
          f"{sent / n:.2f} datagrams per round trip")
    w.close()
    srv.close()

asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10000))
