"""`gannet receive --port P --dir D`: accept transfers from `gannet send`."""

from __future__ import annotations

import argparse
import os

from gannet.apps.limits import TransferLimits
from gannet.cli import security
from gannet.cli.main import CLIError, summary
from gannet.cli.units import positive_duration
from gannet.cli.wireopt import add_wire_option, wire_settings
from gannet.crypto.code import generate_code

_DEFAULTS = TransferLimits()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "receive",
        help=summary("receive"),
        description="Accept transfers from `gannet send` and save them under --dir. Files are "
        "written as .NAME.gannet-part and renamed only once their SHA-256 verifies; an "
        "existing file is never replaced (NAME (1).ext is used) unless --overwrite.",
    )
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, required=True, help="port to listen on; 0 picks a free one")
    p.add_argument("--dir", required=True, metavar="DIR", help="where files go (created if missing)")
    add_wire_option(p, carrier="server")
    p.add_argument("--once", action="store_true",
                   help="exit after one complete transfer: 0 if every file verified, else 1")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--header-timeout", type=positive_duration, default=_DEFAULTS.header_timeout,
                   metavar="SECONDS", help="drop a connection that has not sent its header "
                   f"after this long (default {_DEFAULTS.header_timeout:g}s)")
    p.add_argument("--max-connections", type=int, default=_DEFAULTS.max_connections, metavar="N",
                   help="transfers handled at once; more are refused as busy "
                   f"(default {_DEFAULTS.max_connections})")
    security.add_arguments(p, peer_key=False, code="the code senders must give (default: a new one, "
                           "printed as `code: CODE` on stderr); a wrong code from a sender ends "
                           "the receiver, as the code was guessed at")
    p.set_defaults(func=run)


def format_address(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return repr(addr)


def run(args: argparse.Namespace) -> int:
    import asyncio

    import gannet
    from gannet.apps.transfer.progress import Reporter
    from gannet.apps.transfer.protocol import CHUNK
    from gannet.apps.transfer.receiver import Receiver
    from gannet._lazy import load_on_thread
    from gannet.io.loops import run as run_loop

    if not 0 <= args.port <= 65535:
        raise CLIError(f"invalid port {args.port}")
    try:
        os.makedirs(args.dir, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot use --dir {args.dir}: {exc.strerror or exc}") from None
    if not os.path.isdir(args.dir):
        raise CLIError(f"--dir {args.dir} is not a directory")
    if args.max_connections < 1:
        raise CLIError("--max-connections must be at least 1")
    settings = security.overrides(args, "receive")
    carrier = wire_settings(args)
    if not settings.get("insecure") and not settings.get("psk_file") and "code" not in settings:
        settings["code"] = generate_code()
    rep = Reporter("receive")
    limits = TransferLimits(header_timeout=args.header_timeout,
                            max_connections=args.max_connections)
    receiver = Receiver(args.dir, overwrite=args.overwrite, reporter=rep, limits=limits)

    async def main() -> int:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_client(reader, writer) -> None:
            out = await receiver.handle(reader, writer)
            if out.complete and args.once and not done.done():
                done.set_result(1 if out.failed else 0)

        try:
            server = await gannet.start_server(on_client, args.host, args.port, limit=4 * CHUNK,
                                               wire=args.wire, **carrier, **settings)
        except OSError as exc:
            raise CLIError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None

        def on_refused(ev) -> None:
            rep.log(f"refused {format_address(ev.addr)}: {ev.error}")
            if "code" in settings and not done.done():
                # The code was tried and is no longer secret enough to keep.
                done.set_result(1)

        server.endpoint.on_refused = on_refused
        host, port = server.addresses[0][:2]
        if "code" in settings:
            rep.log(f"code: {settings['code']}")
        rep.log(f"listening on {host}:{port}, saving to {receiver.root}"
                + (" (one transfer)" if args.once else ""))
        # Every transfer decompresses with zstandard (or may): loaded while no
        # sender is here, not between the first one's header and its data.
        load_on_thread("zstandard")
        try:
            return await done
        finally:
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except TimeoutError:
                server.abort_clients()

    try:
        return run_loop(main())
    finally:
        rep.close()
