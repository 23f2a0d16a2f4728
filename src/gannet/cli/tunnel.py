"""`gannet tunnel`: forward TCP connections over Gannet (docs/tunnel.md).

    gannet tunnel server --listen :7000 --target 127.0.0.1:6379
    gannet tunnel client --listen 127.0.0.1:6380 --server tunnel.example:7000

The client carries every TCP connection as a channel of one Gannet
connection to the server (--mode mux, the default), or each over a Gannet
connection of its own (--mode stream); the server accepts both and opens a
TCP connection to the target for each. Each connection is logged to stderr
(open, bytes each way, why it closed) unless --quiet.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys

TYPE_CHECKING = False  # (typing not imported at run time: the parsers stay light)
if TYPE_CHECKING:
    from typing import Any

from gannet.apps.display import SafeFormatter, safe_text
from gannet.cli import security
from gannet.cli.main import CLIError, summary

# gannet.apps.tunnel (and asyncio with it) is imported by the functions that
# run the command, not here: `gannet --help` and the other commands skip it.


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tunnel",
        help=summary("tunnel"),
        description="TCP port forwarding over Gannet. Run `tunnel server` next to the TCP "
        "service and `tunnel client` next to its users; the TCP connections to the client "
        "are carried to the server (as channels of one Gannet connection, or each over its "
        "own), which connects each to the target.",
    )
    sub = p.add_subparsers(dest="tunnel_role", metavar="ROLE")
    sub.required = True

    s = sub.add_parser(
        "server", help="accept Gannet connections (UDP) and connect each to a TCP target",
        description="Accept Gannet connections on a UDP port from tunnel clients of either "
        "mode; for each tunneled TCP connection open one to --target and copy both ways.",
    )
    s.add_argument("--listen", required=True, metavar="[HOST]:PORT",
                   help="UDP address to accept Gannet connections on (':7000' = all interfaces)")
    s.add_argument("--target", required=True, metavar="HOST:PORT",
                   help="TCP service every tunneled connection is forwarded to")
    s.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up on a target connection after this long (default 10)")
    s.add_argument("--modes", default="mux,stream", metavar="MODES",
                   help="the client modes to accept, comma-separated (default mux,stream)")
    s.add_argument("--max-mux", type=int, default=None, metavar="N",
                   help="mux connections (tunnel clients) served at once; one more is refused "
                   "(default 64; each can make the server hold about 33 MiB, see docs/tunnel.md)")
    _common(s)
    security.add_arguments(s, peer_key=False)
    s.set_defaults(func=run_server)

    c = sub.add_parser(
        "client", help="accept TCP connections and carry them over Gannet to a tunnel server",
        description="Accept TCP connections and carry them over Gannet to --server, copying "
        "both ways: as channels of one Gannet connection (--mode mux) or each over a Gannet "
        "connection of its own (--mode stream).",
    )
    c.add_argument("--listen", required=True, metavar="[HOST]:PORT",
                   help="TCP address to accept connections on (e.g. 127.0.0.1:6380)")
    c.add_argument("--server", required=True, metavar="HOST:PORT",
                   help="address of the `gannet tunnel server`")
    c.add_argument("--connect-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up on reaching the tunnel server after this long "
                   "(default: Gannet's connect_timeout, 30)")
    c.add_argument("--mode", choices=("mux", "stream"), default="mux",
                   help="mux (default): every TCP connection a channel of one Gannet connection "
                   "(no handshake per connection; requests of many connections share segments); "
                   "stream: a Gannet connection each (a lost datagram stalls only its own "
                   "connection)")
    _common(c)
    security.add_arguments(c)
    c.set_defaults(func=run_client)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="do not log every connection (errors are still shown)")
    p.add_argument("--mss", type=int, default=None, help="Gannet MSS (default 1400)")
    p.add_argument("--window", type=int, default=None, metavar="BYTES",
                   help="Gannet receive window / send buffer per connection (default 4 MiB)")


def _address(text: str, what: str, *, need_host: bool) -> tuple[str, int]:
    from gannet.apps import tunnel as tun

    try:
        host, port = tun.parse_address(text)
    except ValueError as exc:
        raise CLIError(f"{what}: {exc}") from None
    if need_host and not host:
        raise CLIError(f"{what}: a host is needed ({text!r}); try 127.0.0.1:{port}")
    if need_host and port == 0:
        raise CLIError(f"{what}: port 0 is not a destination")
    return host, port


def _resolvable(addr: tuple[str, int], what: str, kind: int) -> None:
    """Fail at start, in one line, on a host name that does not resolve (rather
    than on every connection later)."""
    try:
        socket.getaddrinfo(addr[0], addr[1], type=kind)
    except socket.gaierror as exc:
        raise CLIError(f"{what}: cannot resolve {addr[0]!r}: {exc.strerror or exc}") from None


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.mss is not None:
        out["mss"] = args.mss
    if args.window is not None:
        if args.window < 4096:
            raise CLIError("--window must be at least 4096")
        out["window_size"] = args.window
        out["send_buffer_size"] = args.window
    if getattr(args, "connect_timeout", None) is not None and args.tunnel_role == "client":
        if not args.connect_timeout > 0:
            raise CLIError("--connect-timeout must be positive")
        out["connect_timeout"] = args.connect_timeout
    out.update(security.overrides(args, f"tunnel {args.tunnel_role}"))
    return out


def _setup_logging(role: str, quiet: bool) -> logging.Handler:
    from gannet.apps import tunnel as tun

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(f"gannet tunnel {role}: %(message)s"))
    tun.log.addHandler(handler)
    tun.log.setLevel(logging.WARNING if quiet else logging.INFO)
    tun.log.propagate = False
    return handler


def _say(role: str, text: str) -> None:
    print(safe_text(f"gannet tunnel {role}: {text}"), file=sys.stderr, flush=True)


async def _serve(start, role: str, banner) -> int:
    import asyncio

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        tunnel = await start()
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot listen: {exc.strerror or exc}") from None
    _say(role, banner(tunnel))
    try:
        await stop.wait()
    finally:
        _say(role, f"stopping ({tunnel.active} open connections reset, {tunnel.total} served)")
        await tunnel.close()
    return 0


def run_server(args: argparse.Namespace) -> int:
    from gannet.apps import tunnel as tun
    from gannet.io.loops import run as run_loop

    listen = _address(args.listen, "--listen", need_host=False)
    target = _address(args.target, "--target", need_host=True)
    if not args.connect_timeout > 0:
        raise CLIError("--connect-timeout must be positive")
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not modes or any(m not in tun.MODES for m in modes):
        raise CLIError(f"--modes: mux, stream or both (mux,stream), not {args.modes!r}")
    max_mux = tun.MAX_MUX if args.max_mux is None else args.max_mux
    if max_mux < 1:
        raise CLIError("--max-mux must be at least 1")
    _resolvable(target, "--target", socket.SOCK_STREAM)
    overrides = _overrides(args)
    handler = _setup_logging("server", args.quiet)
    try:
        return run_loop(_serve(
            lambda: tun.start_tunnel_server(listen, target, connect_timeout=args.connect_timeout,
                                            modes=modes, max_mux=max_mux, **overrides),
            "server",
            lambda t: f"listening on {tun.format_address(t.address)} (udp, "
                      f"{' and '.join(t.modes)} clients), "
                      f"forwarding to {tun.format_address(target)} (tcp)",
        ))
    finally:
        tun.log.removeHandler(handler)


def run_client(args: argparse.Namespace) -> int:
    from gannet.apps import tunnel as tun
    from gannet.io.loops import run as run_loop

    listen = _address(args.listen, "--listen", need_host=False)
    server = _address(args.server, "--server", need_host=True)
    _resolvable(server, "--server", socket.SOCK_DGRAM)
    overrides = _overrides(args)
    handler = _setup_logging("client", args.quiet)
    try:
        return run_loop(_serve(
            lambda: tun.start_tunnel_client(listen, server, mode=args.mode, **overrides),
            "client",
            lambda t: f"listening on {tun.format_address(t.address)} (tcp), "
                      f"tunneling to {tun.format_address(server)} (udp, {t.mode} mode)",
        ))
    finally:
        tun.log.removeHandler(handler)
