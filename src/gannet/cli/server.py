"""`gannet server`: accept message-protocol sessions, print each message to stdout.

Every DATA message received (after reassembly) is written to stdout as one
line and acknowledged; sessions (connect, negotiated parameters, messages,
disconnect, errors) are logged to stderr.
"""

from __future__ import annotations

import argparse
import sys

from gannet.apps.display import safe_text
from gannet.apps.limits import MessageLimits
from gannet.apps.messages.codec import FORMATS
from gannet.apps.messages.negotiation import (
    DEFAULT_KEEPALIVE,
    DEFAULT_PACKET_SIZE,
    MIN_PACKET_SIZE,
    Limits,
    keepalive_problem,
)
from gannet.apps.messages.transport import TRANSPORTS, resolve
from gannet.cli import security
from gannet.cli.main import CLIError, summary

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing)
if TYPE_CHECKING:
    from gannet.apps.messages.session import ServerSession

DEFAULT_PORT = 12345


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "server",
        help=summary("server"),
        description="Accept message-protocol clients (many at once). Each DATA message "
        "is printed to stdout as one line and acknowledged; session events go to stderr.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})")
    p.add_argument("--max-size", type=int, default=DEFAULT_PACKET_SIZE, metavar="SIZE",
                   help=f"largest DATA payload per packet; clients asking for more are lowered "
                   f"(default {DEFAULT_PACKET_SIZE})")
    p.add_argument("--max-window", type=int, default=64, metavar="N",
                   help="largest burst window; clients asking for more are lowered (default 64)")
    p.add_argument("--format", choices=("auto",) + FORMATS, default="auto",
                   help="message encoding to accept; auto detects it per session (default)")
    p.add_argument("--keepalive", type=float, default=DEFAULT_KEEPALIVE, metavar="SECONDS",
                   help=f"longest keepalive interval allowed (default {DEFAULT_KEEPALIVE:g})")
    p.add_argument("--transport", choices=TRANSPORTS, default="auto",
                   help="byte stream to use: gannet, tcp, or auto (gannet when available)")
    p.add_argument("--max-message-size", type=int, default=MessageLimits.max_message_size,
                   metavar="BYTES", help="largest message a session may build from fragments "
                   f"(default {MessageLimits.max_message_size})")
    p.add_argument("--max-buffered", type=int, default=MessageLimits.max_buffered_bytes,
                   metavar="BYTES", help="bytes of unfinished fragmented messages held across "
                   f"all sessions (default {MessageLimits.max_buffered_bytes})")
    p.add_argument("-q", "--quiet", action="store_true", help="do not log every message")
    security.add_arguments(p, peer_key=False)
    p.set_defaults(func=run)


def printable(payload: bytes) -> str:
    """One display line for a payload: control and bidi characters, newlines
    and invalid UTF-8 shown escaped (the client chose these bytes)."""
    return safe_text(payload)


def run(args: argparse.Namespace) -> int:
    import functools
    import logging

    from gannet.apps.display import SafeFormatter
    from gannet.apps.messages.session import MessageServer, log as session_log
    from gannet.io.loops import run as run_loop

    if args.max_size < MIN_PACKET_SIZE:
        raise CLIError(f"--max-size must be at least {MIN_PACKET_SIZE}")
    if args.max_window < 1:
        raise CLIError("--max-window must be at least 1")
    if keepalive_problem(args.keepalive):
        raise CLIError(f"--keepalive: {keepalive_problem(args.keepalive)}")
    if args.max_message_size < 1 or args.max_buffered < 1:
        raise CLIError("--max-message-size and --max-buffered must be positive")
    if not 0 <= args.port <= 65535:
        raise CLIError(f"invalid port {args.port}")
    try:
        name, _, start_server = resolve(args.transport)
    except RuntimeError as exc:
        raise CLIError(str(exc)) from None
    if name == "gannet":
        start_server = functools.partial(start_server, **security.overrides(args, "server"))
    else:
        security.plaintext_transport(args, "server", "--transport tcp")

    handler = logging.StreamHandler(sys.stderr)
    # Log lines quote client_id, DISCONNECT reasons and error texts: escaped.
    handler.setFormatter(SafeFormatter("gannet server: %(message)s"))
    session_log.addHandler(handler)
    session_log.setLevel(logging.INFO)
    session_log.propagate = False

    out = sys.stdout

    def on_message(session: ServerSession, payload: bytes) -> None:
        out.write(printable(payload) + "\n")
        out.flush()
        if not args.quiet:
            session_log.info("[%s %s] message %d: %d bytes", session.peer, session.id,
                             session.stats.messages, len(payload))

    formats = FORMATS if args.format == "auto" else (args.format,)
    limits = Limits(max_packet_size=args.max_size, max_window=args.max_window,
                    keepalive_interval=args.keepalive)

    async def main() -> None:
        server = MessageServer(on_message, limits=limits, formats=formats,
                               max_message_size=args.max_message_size,
                               max_buffered_bytes=args.max_buffered)
        await server.start(args.host, args.port, start_server)
        host, port = server.address
        print(f"gannet server: listening on {host}:{port} (transport {name}, "
              f"format {args.format}, max_packet_size={args.max_size}, "
              f"max_window={args.max_window})", file=sys.stderr, flush=True)
        async with server:
            await server.serve_forever()

    try:
        run_loop(main())
    except OSError as exc:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return 0
