"""Gannet runner: asyncio streams (``gannet.open_connection`` /
``gannet.start_server``) or, with ``--api socket``, the blocking
``gannet.Socket``. ``--mtu`` pins the datagram size (path MTU discovery
off) and ``--cc`` picks the congestion controller.
"""

from __future__ import annotations

import asyncio
import sys
import time

import common as c
import gannet_counters
import streams


def config_for(gannet, opts: dict):
    """The gannet.Config the options ask for."""
    fields: dict = {}
    if opts.get("mtu"):
        fields.update(max_datagram_size=opts["mtu"], pmtud=False)
    if opts.get("cc"):
        fields["congestion_control"] = opts["cc"]
    if opts.get("insecure"):
        fields["insecure"] = True  # the plaintext row
    if opts.get("busy_poll") is not None:
        fields["busy_poll"] = opts["busy_poll"]
    return gannet.Config(**fields)


def _port_of(server) -> int:
    return server.addresses[0][1]


async def streams_server(args, gannet, opts, meta) -> None:
    done: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_connection(reader, writer):
        try:
            res = await streams.serve_connection(reader, writer, args)
            res["counters"] = gannet_counters.counters(writer)
        except Exception as e:  # noqa: BLE001 - reported in the RESULT line
            res = {"error": repr(e)}
        if not done.done():
            done.set_result(res)

    # port 0: the server binds a free port and reports it (no race with other tests)
    server = await gannet.start_server(on_connection, args.host, args.port,
                                       config=config_for(gannet, opts))
    c.ready(_port_of(server))
    res = await asyncio.wait_for(done, 170)
    await asyncio.sleep(0.05)  # let the last ACKs and the confirmation leave
    server.close()
    # The result is in; a connection still closing (its last ACK lost, or a
    # loaded machine) must not turn a finished run into a failure.
    try:
        await asyncio.wait_for(server.wait_closed(), 2.0)
    except TimeoutError:
        meta["close_timed_out"] = True  # said in the result, not hidden
    c.emit({**res, **meta})


async def streams_client(args, gannet, opts, meta) -> None:
    t_open = time.monotonic()
    reader, writer = await gannet.open_connection(args.host, args.port,
                                                  config=config_for(gannet, opts))
    t_open = time.monotonic() - t_open
    sampler = gannet_counters.Sampler(writer, args.sample_ms / 1e3) if args.sample_ms else None
    res = await streams.run_client(reader, writer, args)
    res["counters"] = gannet_counters.counters(writer)
    res["counters"]["handshake_s"] = t_open
    if sampler is not None:
        res["counters"]["sampled"] = sampler.stop()
    c.emit({**res, **meta})


def socket_server(args, gannet, opts, meta) -> None:
    import run_tcp

    ls = gannet.Socket(config=config_for(gannet, opts))
    ls.bind((args.host, args.port))
    ls.listen(1)
    c.ready(ls.getsockname()[1])
    conn, _ = ls.accept()
    res = run_tcp.serve_blocking(conn, args)
    conn.close()
    ls.close()
    c.emit({**res, **meta})


def socket_client(args, gannet, opts, meta) -> None:
    import run_tcp

    s = gannet.Socket(config=config_for(gannet, opts))
    s.connect((args.host, args.port))
    res = run_tcp.client_blocking(s, args)
    s.close()
    c.emit({**res, **meta})


def main(argv=None) -> None:
    p = c.parser(__doc__)
    p.add_argument("--api", choices=["streams", "socket"], default="streams")
    p.add_argument("--mtu", type=int, default=None, help="datagram size (PMTUD off)")
    p.add_argument("--cc", default=None, help="congestion controller (bbr, cubic, newreno)")
    p.add_argument("--busy-poll", type=int, default=None, metavar="US",
                   help="Config.busy_poll: microseconds to poll before sleeping (0: off; "
                        "default: the Config's)")
    p.add_argument("--uvloop", action="store_true", help="run the streams API on uvloop")
    p.add_argument("--insecure", action="store_true",
                   help="no encryption (the plaintext row)")
    p.add_argument("--sample-ms", type=float, default=0.0, metavar="MS",
                   help="the sender's state every MS milliseconds in the result's counters "
                        "(bench/gannet_counters.py; 0: off, the default: it wakes the loop)")
    args = p.parse_args(argv)
    import gannet

    api = args.api
    if args.role == "probe":
        c.emit({"ok": True, "api": api})
        return
    opts = {"mtu": args.mtu, "cc": args.cc, "insecure": True if args.insecure else None,
            "busy_poll": args.busy_poll}
    meta = {"api": api}
    if api == "streams":
        name, factory = streams.pick_loop(args.uvloop)
        meta["loop"] = name
        fn = streams_server if args.role == "server" else streams_client
        streams.run(lambda: fn(args, gannet, opts, meta), factory)
    elif args.role == "server":
        socket_server(args, gannet, opts, meta)
    else:
        socket_client(args, gannet, opts, meta)


if __name__ == "__main__":
    main(sys.argv[1:])
