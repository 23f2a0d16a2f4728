"""`gannet chat`: a two-person terminal chat with file transfer (docs/chat.md).

Both people run the same command with their own port and the other's
address; either may start first. One UDP port per side both listens and
connects.
"""

from __future__ import annotations

import argparse
import getpass
import signal
import socket
from pathlib import Path

from gannet.cli import security
from gannet.cli.main import CLIError, summary
from gannet.crypto.code import generate_code

# Short keep-alive so a vanished peer is noticed within seconds: probes start
# after 3 s of silence, one a second, and the third unanswered one ends it.
KEEPALIVE = {"keepalive_idle": 3.0, "keepalive_interval": 1.0, "keepalive_count": 3}
# Any silence beyond this (also while data is in flight) means the peer is gone.
IDLE_TIMEOUT = 8.0
# A small send buffer keeps chat messages from queueing behind much file data.
SEND_BUFFER = 256 * 1024


def parse_peer(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def port_number(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}")
    return int(text)


def default_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database entry
        return "me"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "chat",
        help=summary("chat"),
        description="Two-person chat with file transfer. Run the same command on both "
        "sides (each with its own --listen port and the other's address); either may "
        "start first. Type help once connected.",
    )
    p.add_argument("--listen", type=port_number, required=True, metavar="PORT",
                   help="the UDP port this side listens and connects from")
    p.add_argument("--peer", type=parse_peer, required=True, metavar="HOST:PORT",
                   help="the other side's address")
    p.add_argument("--name", default=None, help="your name as the peer sees it (default: user name)")
    p.add_argument("--dir", type=Path, default=Path("downloads"), metavar="DOWNLOADS",
                   help="folder for received files (default ./downloads)")
    p.add_argument("--bind", default=None, metavar="HOST",
                   help="local address to bind (default: all addresses)")
    security.add_arguments(p, peer_key=False, code="the code the other side printed (the side "
                           "started without --code prints one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from gannet.io.loops import run as run_loop

    from gannet.apps.chat.rendezvous import Rendezvous
    from gannet.apps.chat.session import ChatApp, Info
    from gannet.apps.chat.ui import TerminalUI
    from gannet.io.endpoint import make_config

    name = (args.name or default_name()).strip()[:64] or "me"
    if args.dir.exists() and not args.dir.is_dir():
        raise CLIError(f"--dir {args.dir} is not a folder")
    settings = security.overrides(args, "chat")
    new_code = None
    if not settings.get("insecure") and not settings.get("psk_file") and "code" not in settings:
        new_code = settings["code"] = generate_code()
    config = make_config(None, {**KEEPALIVE, "idle_timeout": IDLE_TIMEOUT,
                                "send_buffer_size": SEND_BUFFER, **settings})
    peer_host, peer_port = args.peer

    async def main() -> None:
        loop = asyncio.get_running_loop()
        app: ChatApp | None = None

        def on_line(line: str) -> None:
            if app is not None:
                app.handle_line(line)

        def on_close() -> None:
            if app is not None:
                app.close_input()

        ui = TerminalUI(on_line, on_close, prompt=f"{name}> ")
        try:
            rv = await Rendezvous.create(args.listen, peer_host, peer_port, name, config,
                                         bind_host=args.bind)
        except socket.gaierror as exc:
            raise CLIError(f"--peer: cannot resolve {peer_host!r}: {exc.strerror or exc}") from None
        except OSError as exc:
            raise CLIError(f"cannot use port {args.listen}: {exc.strerror or exc}") from None
        app = ChatApp(rv, name, args.dir, ui.event)
        rv.status = lambda text: ui.event(Info(text, "connecting"))
        ui.event(Info(f"{name}: listening on UDP port {rv.local_port}; received files go to "
                      f"{args.dir}"))
        if new_code is not None:
            ui.event(Info(f"code: {new_code} (the other side passes --code {new_code})"))
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                loop.add_signal_handler(sig, app.quit)
            except (NotImplementedError, RuntimeError):
                pass
        ui.start()
        try:
            await app.run()
        finally:
            ui.stop()

    run_loop(main())
    return 0
