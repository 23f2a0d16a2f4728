"""Lines of Python per 64-byte round trip over the asyncio streams API, by
function: client and server on one event loop over loopback UDP (as
bench/aio_cost.py), every line counted with `sys.settrace` over N round
trips after 200 to settle. Compiled modules (the core) run no traced lines;
what is counted is the Python above the core (adapter, streams, security
layer) and the benchmark's own driver.

    python bench/aio_lines.py 2000 --insecure
    python bench/aio_lines.py 2000            # encrypted

Tracing slows the run about tenfold, so a timer fires now and then that
does not fire untraced: the datagrams per round trip are printed (2.00
means none did).
"""
import argparse, asyncio, collections, os, sys
import gannet

_ROOT = os.path.dirname(gannet.__file__)


def where(code) -> str:
    path = code.co_filename
    name = os.path.relpath(path, _ROOT) if path.startswith(_ROOT) else os.path.basename(path)
    return f"{name}:{code.co_name}"


async def main(n, insecure, lines, calls):
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
    r, w = await gannet.open_connection("127.0.0.1", srv.addresses[0][1], config=config)
    msg = b"x" * 64

    async def rounds(k):
        for _ in range(k):
            w.write(msg)
            await w.drain()
            await r.readexactly(64)

    def trace(frame, event, arg):
        key = where(frame.f_code)
        calls[key] += 1  # a call, or a coroutine resumed

        def local(frame, event, arg):
            if event == "line":
                lines[key] += 1
            return local
        return local

    await rounds(200)
    cep, sep = w.get_extra_info("endpoint").ep, srv.endpoint.ep
    sent0 = cep.stats.datagrams_sent + sep.stats.datagrams_sent
    sys.settrace(trace)
    await rounds(n)
    sys.settrace(None)
    sent = cep.stats.datagrams_sent + sep.stats.datagrams_sent - sent0
    w.close()
    srv.close()
    return sent


p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("count", type=int, nargs="?", default=2000, help="round trips (after 200 to settle)")
p.add_argument("--no-uvloop", action="store_true", help="on asyncio's own loop")
p.add_argument("--insecure", action="store_true", help="no encryption (the plaintext row)")
args = p.parse_args()
factory = None
if not args.no_uvloop:
    import uvloop
    factory = uvloop.new_event_loop
lines, calls = collections.Counter(), collections.Counter()
with asyncio.Runner(loop_factory=factory) as runner:
    sent = runner.run(main(args.count, args.insecure, lines, calls))
n = args.count
print(f"{sent / n:.2f} datagrams and {sum(lines.values()) / n:.1f} lines of Python per round trip "
      "(both sides; the driver's included)")
print(f"{'lines':>7} {'calls':>6}  function")
for key, c in lines.most_common():
    if c / n >= 0.05:
        print(f"{c / n:7.2f} {calls[key] / n:6.2f}  {key}")
