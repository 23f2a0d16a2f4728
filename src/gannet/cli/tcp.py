"""`gannet tcp`: Gannet's engine speaking real TCP, step by step (seed 002).

`gannet tcp connect HOST:PORT` opens a TCP connection from user space: the
handshake, data and close are Gannet's, carried in TCP headers on raw IP
sockets (gannet.io.rawtcp), and each step is printed as seed 002's client
printed it. `gannet tcp test-server` is seed 002's test server: a kernel TCP
socket that prints what each connection sends as raw bytes, hex and text.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading

from gannet.cli.main import CLIError, summary

DEFAULT_PORT = 8888


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tcp",
        help=summary("tcp"),
        description="Gannet's engine on raw IP sockets, speaking RFC 9293 TCP to the "
        "kernel (needs root), and seed 002's kernel-socket test server.",
    )
    sub = p.add_subparsers(dest="tcp_command", metavar="COMMAND")
    p.set_defaults(func=lambda args: _usage(p))

    c = sub.add_parser(
        "connect",
        help="open a TCP connection with Gannet's engine and send a message, step by step",
        description="Perform TCP's three-way handshake with HOST:PORT from user space, "
        "send the message (or stdin), print what the server sends back to stdout, then "
        "close with FIN. Each step is reported on stderr. Needs root (raw sockets and a "
        "firewall rule that keeps the kernel from resetting Gannet's port).",
    )
    c.add_argument("target", metavar="HOST:PORT", help="server address")
    c.add_argument("--message", help="text to send (default: read stdin to its end)")
    c.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="give up on the handshake after this long (default 5)")
    c.add_argument("--linger", type=float, default=1.0, metavar="SECONDS",
                   help="after sending, how long to wait for the server's reply or FIN "
                   "before closing (default 1)")
    c.set_defaults(func=run_connect)

    s = sub.add_parser(
        "test-server",
        help="seed 002's test server: a kernel TCP socket printing what it receives",
        description="Listen with a kernel TCP socket and print each connection and the "
        "bytes it sends, as raw bytes, hex and text.",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})")
    s.add_argument("--reply", metavar="TEXT",
                   help="send this text back after each chunk received (default: nothing)")
    s.set_defaults(func=run_test_server)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


# ------------------------------------------------------------- test-server
def escaped_text(data: bytes) -> str:
    """Peer bytes as one display line: UTF-8 where valid, every control
    character and invalid byte escaped."""
    text = data.decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode()
                   for ch in text)


def report_received(data: bytes, out) -> None:
    """Seed 002's three views of the bytes received."""
    print(f"[>] Received {len(data)} bytes:", file=out)
    print(f"    Raw bytes: {data!r}", file=out)
    print(f"    Hex: {data.hex()}", file=out)
    print(f"    Text: {escaped_text(data)}", file=out, flush=True)


def run_test_server(args: argparse.Namespace) -> int:
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        srv = socket.socket(family, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((args.host, args.port))
        srv.listen(16)
    except OSError as exc:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    out = sys.stdout
    lock = threading.Lock()
    host, port = srv.getsockname()[:2]
    print(f"[*] Server listening on {_hostport(host, port)}", file=out, flush=True)
    reply = args.reply.encode() if args.reply is not None else None

    def serve(conn: socket.socket, peer: tuple) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError as exc:
                    with lock:
                        print(f"[!] Connection from {_hostport(*peer[:2])}: {exc.strerror or exc}",
                              file=out, flush=True)
                    return
                if not data:
                    break
                with lock:
                    report_received(data, out)
                if reply is not None:
                    try:
                        conn.sendall(reply)
                    except OSError:
                        return
        with lock:
            print(f"[-] Connection from {_hostport(*peer[:2])} closed", file=out, flush=True)

    with srv:
        while True:
            conn, peer = srv.accept()
            with lock:
                print(f"[+] Connection from {_hostport(*peer[:2])}", file=out, flush=True)
            threading.Thread(target=serve, args=(conn, peer), daemon=True).start()


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ----------------------------------------------------------------- connect
def parse_target(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CLIError(f"expected HOST:PORT, got {target!r}")
    return host.strip("[]"), int(port)


def run_connect(args: argparse.Namespace) -> int:
    from gannet.cli.tcp_connect import connect_and_send

    host, port = parse_target(args.target)
    try:
        host = socket.gethostbyname(host)  # the TCP wire is IPv4
    except (socket.gaierror, UnicodeError) as exc:
        raise CLIError(f"cannot resolve {host!r} to an IPv4 address: {exc}") from None
    if args.message is not None:
        data = args.message.encode()
    else:
        data = sys.stdin.buffer.read()
    return connect_and_send(host, port, data, timeout=args.timeout, linger=args.linger)
