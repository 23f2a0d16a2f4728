"""Gannet runner: asyncio streams (``gannet.open_connection`` / ``gannet.start_server``),
or the blocking ``gannet.Socket`` when the streams are not there.

Until the Gannet API exists this runner reports "not available (reason)"
and exits 0, so the rest of the comparison still runs.  ``--mtu`` and
``--cc`` are forwarded as keyword arguments (``mtu=``, ``cc=``) to the calls
that accept them (by name, through ``**kwargs``, or as fields of a
``config=`` object); options the API does not take are listed in the result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import sys

import common as c
import streams

OPTION_NAMES = {"mtu": ("mtu", "max_datagram_size"), "cc": ("cc", "congestion_control"),
                "insecure": ("insecure",)}


def load_api(which: str):
    """('streams' | 'socket', gannet module); exits as unavailable if neither."""
    try:
        import gannet
    except Exception as e:  # noqa: BLE001 - any import failure means unavailable
        c.unavailable(f"import gannet failed: {e!r}")
    has_streams = callable(getattr(gannet, "open_connection", None)) and callable(
        getattr(gannet, "start_server", None))
    has_socket = callable(getattr(gannet, "Socket", None))
    if which in ("auto", "streams") and has_streams:
        return "streams", gannet
    if which in ("auto", "socket") and has_socket:
        return "socket", gannet
    wanted = {"auto": "gannet.open_connection/start_server or gannet.Socket",
              "streams": "gannet.open_connection/start_server",
              "socket": "gannet.Socket"}[which]
    c.unavailable(f"{wanted} not implemented yet (gannet {getattr(gannet, '__version__', '?')})")


def _config_class(gannet):
    """Gannet's settings dataclass, wherever the package keeps it."""
    import importlib

    for mod, attr in (("gannet", "Config"), ("gannet.config", "Config"),
                      ("gannet.core.config", "Config")):
        try:
            obj = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError):
            continue
        if dataclasses.is_dataclass(obj):
            return obj
    return None


def build_kwargs(func, gannet, wanted: dict) -> tuple[dict, list[str]]:
    """Keyword arguments for ``func`` carrying the requested options."""
    wanted = {k: v for k, v in wanted.items() if v is not None}
    if not wanted:
        return {}, []
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return {}, sorted(wanted)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs, ignored = {}, []
    cfg_cls = _config_class(gannet) if "config" in params else None
    cfg_fields = {f.name for f in dataclasses.fields(cfg_cls)} if cfg_cls else set()
    cfg_values = {}
    for key, value in wanted.items():
        names = OPTION_NAMES[key]
        name = next((n for n in names if n in params), None)
        if name is not None:
            kwargs[name] = value
        elif var_kw:
            kwargs[key] = value  # the API's own alias (mtu= pins the datagram size)
        elif (field := next((n for n in names if n in cfg_fields), None)) is not None:
            cfg_values[field] = value
            if key == "mtu" and "pmtud" in cfg_fields:
                cfg_values["pmtud"] = False
        else:
            ignored.append(key)
    if cfg_values:
        kwargs["config"] = cfg_cls(**cfg_values)
    return kwargs, ignored


def _port_of(server, fallback: int) -> int:
    try:
        socks = getattr(server, "sockets", None)
        if socks:
            return socks[0].getsockname()[1]
        for attr in ("address", "local_address", "sockname"):
            addr = getattr(server, attr, None)
            if isinstance(addr, tuple) and len(addr) >= 2:
                return addr[1]
    except Exception:  # noqa: BLE001 - fall back to the port we asked for
        pass
    return fallback


async def streams_server(args, gannet, opts, meta) -> None:
    port = args.port  # 0: the server binds a free port and reports it (no race with other tests)
    done: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_connection(reader, writer):
        try:
            res = await streams.serve_connection(reader, writer, args)
        except Exception as e:  # noqa: BLE001 - reported in the RESULT line
            res = {"error": repr(e)}
        if not done.done():
            done.set_result(res)

    kwargs, meta["ignored_options"] = build_kwargs(gannet.start_server, gannet, opts)
    server = await streams.maybe_await(
        gannet.start_server(on_connection, args.host, port, **kwargs))
    c.ready(_port_of(server, port))
    res = await asyncio.wait_for(done, 170)
    await asyncio.sleep(0.05)  # let the last ACKs and the confirmation leave
    try:
        server.close()
        if hasattr(server, "wait_closed"):
            await asyncio.wait_for(streams.maybe_await(server.wait_closed()), 2.0)
    except Exception:  # noqa: BLE001 - closing is best effort
        pass
    c.emit({**res, **meta})


async def streams_client(args, gannet, opts, meta) -> None:
    kwargs, meta["ignored_options"] = build_kwargs(gannet.open_connection, gannet, opts)
    reader, writer = await streams.maybe_await(
        gannet.open_connection(args.host, args.port, **kwargs))
    res = await streams.run_client(reader, writer, args)
    c.emit({**res, **meta})


def socket_server(args, gannet, opts, meta) -> None:
    import run_tcp

    kwargs, meta["ignored_options"] = build_kwargs(gannet.Socket, gannet, opts)
    ls = gannet.Socket(**kwargs)
    ls.bind((args.host, args.port))
    if hasattr(ls, "listen"):
        ls.listen(1)
    c.ready(ls.getsockname()[1])
    conn, _ = ls.accept()
    res = run_tcp.serve_blocking(conn, args)
    conn.close()
    ls.close()
    c.emit({**res, **meta})


def socket_client(args, gannet, opts, meta) -> None:
    import run_tcp

    kwargs, meta["ignored_options"] = build_kwargs(gannet.Socket, gannet, opts)
    s = gannet.Socket(**kwargs)
    s.connect((args.host, args.port))
    res = run_tcp.client_blocking(s, args)
    s.close()
    c.emit({**res, **meta})


def main(argv=None) -> None:
    p = c.parser(__doc__)
    p.add_argument("--api", choices=["auto", "streams", "socket"], default="auto")
    p.add_argument("--mtu", type=int, default=None, help="forwarded as mtu=")
    p.add_argument("--cc", default=None, help="forwarded as cc=")
    p.add_argument("--uvloop", action="store_true", help="run the streams API on uvloop")
    p.add_argument("--insecure", action="store_true",
                   help="forwarded as insecure=True: no encryption (the plaintext row)")
    args = p.parse_args(argv)
    api, gannet = load_api(args.api)
    if args.role == "probe":
        c.emit({"ok": True, "api": api})
        return
    opts = {"mtu": args.mtu, "cc": args.cc, "insecure": True if args.insecure else None}
    meta = {"api": api}
    try:
        if api == "streams":
            name, factory = streams.pick_loop(args.uvloop)
            meta["loop"] = name
            fn = streams_server if args.role == "server" else streams_client
            streams.run(lambda: fn(args, gannet, opts, meta), factory)
        elif args.role == "server":
            socket_server(args, gannet, opts, meta)
        else:
            socket_client(args, gannet, opts, meta)
    except NotImplementedError as e:
        c.unavailable(f"gannet {api} API raised NotImplementedError: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
