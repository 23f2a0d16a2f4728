"""`gannet echo-server` and `gannet echo`: the multi-client echo of seed 004.

The server accepts any number of clients on one port with the blocking
`gannet.Socket` API, one thread per client, and sends every byte back as it
arrives; connects and disconnects are logged to stderr. The client sends
each line of stdin (or each --message), waits for its echo and prints it.
"""

from __future__ import annotations

import argparse
import sys
import threading

from gannet.apps.display import safe_text
from gannet.cli import security
from gannet.cli.main import CLIError, summary
from gannet.cli.wireopt import add_wire_option, wire_settings

DEFAULT_PORT = 8000
ECHO_TIMEOUT = 30.0  # longest the client waits for one echo


def register(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser(
        "echo-server",
        help=summary("echo-server"),
        description="Multi-client echo server over Gannet: each client gets its own thread; "
        "connects and disconnects are logged to stderr.",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})")
    add_wire_option(s, carrier="server")
    security.add_arguments(s, peer_key=False)
    s.set_defaults(func=run_server)

    c = subparsers.add_parser(
        "echo",
        help=summary("echo"),
        description="Send each line of stdin (or each --message) to a gannet echo-server "
        "and print each echo to stdout.",
    )
    c.add_argument("address", metavar="HOST:PORT", help="the echo server")
    c.add_argument("--message", "-m", action="append", metavar="TEXT",
                   help="send TEXT instead of reading stdin (repeatable)")
    add_wire_option(c, carrier="client")
    security.add_arguments(c)
    c.set_defaults(func=run_client)


def _log(text: str) -> None:
    print(safe_text(f"gannet echo-server: {text}"), file=sys.stderr, flush=True)


def _fmt(addr: tuple) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def handle_client(conn, addr: tuple, counter: dict) -> None:
    """One client: echo until it closes (runs in its own thread)."""
    total = 0
    error = ""
    with counter["lock"]:
        counter["active"] += 1
        active = counter["active"]
    _log(f"client {_fmt(addr)} connected ({active} connected)")
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
            total += len(data)
    except (OSError, ConnectionError) as exc:
        error = f": {exc.__class__.__name__}: {exc}" if str(exc) else f": {exc.__class__.__name__}"
    finally:
        conn.close()
        with counter["lock"]:
            counter["active"] -= 1
            active = counter["active"]
        _log(f"client {_fmt(addr)} disconnected after {total} bytes{error} ({active} connected)")


def run_server(args: argparse.Namespace) -> int:
    import socket as _socket

    from gannet import Socket

    if not 0 <= args.port <= 65535:
        raise CLIError(f"invalid port {args.port}")
    family = _socket.AF_INET6 if ":" in args.host else _socket.AF_INET
    if args.wire == "tcp" and family != _socket.AF_INET:
        raise CLIError("--wire tcp is IPv4 only")
    server = Socket(family, wire=args.wire, **wire_settings(args),
                    **security.overrides(args, "echo-server"))
    try:
        server.bind((args.host, args.port))
        server.listen(128)
    except OSError as exc:
        server.close()
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    host, port = server.getsockname()[:2]
    _log(f"listening on {_fmt((host, port))}")
    counter = {"lock": threading.Lock(), "active": 0}
    try:
        while True:
            conn, addr = server.accept()
            threading.Thread(target=handle_client, args=(conn, addr, counter),
                             name=f"echo-{_fmt(addr)}", daemon=True).start()
    except KeyboardInterrupt:
        _log("shutting down")
    finally:
        server.close()
    return 0


def _parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise CLIError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def run_client(args: argparse.Namespace) -> int:
    import socket as _socket

    from gannet import Socket

    host, port = _parse_address(args.address)
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    if args.wire == "tcp" and family != _socket.AF_INET:
        raise CLIError("--wire tcp is IPv4 only")
    sock = Socket(family, wire=args.wire, **wire_settings(args), **security.overrides(args, "echo"))
    sock.settimeout(ECHO_TIMEOUT)
    if args.carrier == "tun":
        try:
            sock.bind((args.tun_address, 0))
        except OSError as exc:
            sock.close()
            raise CLIError(f"cannot use {args.tun_address}: {exc.strerror or exc}") from None
    try:
        sock.connect((host, port))
    except _socket.gaierror as exc:
        sock.close()
        raise CLIError(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
    out = sys.stdout.buffer
    try:
        lines = ((m + "\n").encode() for m in args.message) if args.message is not None \
            else _stdin_lines()
        for line in lines:
            sock.sendall(line)
            echo = bytearray()
            while len(echo) < len(line):
                data = sock.recv(len(line) - len(echo))
                if not data:
                    raise CLIError("the server closed the connection before echoing everything")
                echo += data
            if echo != line:
                raise CLIError("the echo differs from what was sent")
            out.write(bytes(echo) if echo.endswith(b"\n") else bytes(echo) + b"\n")
            out.flush()
    finally:
        sock.close()
    return 0


def _stdin_lines():
    """Lines of stdin as bytes, each ending with a newline (one is added to the last)."""
    stdin = sys.stdin.buffer
    for line in iter(stdin.readline, b""):
        yield line if line.endswith(b"\n") else line + b"\n"
