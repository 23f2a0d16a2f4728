"""`gannet client`: send messages to a `gannet server` and wait for their ACKs.

Without --message or --file, every line of stdin becomes one DATA message.
Negotiated parameters and each ACK are reported on stderr; the exit code is 0
only when every message was acknowledged and the session ended with
DISCONNECT/ACK.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from typing import AsyncIterator

from gannet.apps.messages.codec import FORMATS
from gannet.apps.messages.negotiation import (
    DEFAULT_KEEPALIVE,
    DEFAULT_PACKET_SIZE,
    DEFAULT_WINDOW,
    MIN_PACKET_SIZE,
    MODES,
    STEP,
    keepalive_problem,
)
from gannet.apps.messages.transport import TRANSPORTS, resolve
from gannet.apps.display import safe_text
from gannet.cli import security
from gannet.cli.main import CLIError, resolve_early, summary

DEFAULT_PORT = 12345


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "client",
        help=summary("client"),
        description="Connect to a `gannet server`, negotiate parameters, send messages "
        "(each line of stdin, or --message / --file) and wait for every ACK. "
        "Exits 0 when all messages were acknowledged and the session closed cleanly.",
    )
    p.add_argument("--server-addr", default="127.0.0.1", metavar="ADDR",
                   help="server address (default 127.0.0.1)")
    p.add_argument("--server-port", type=int, default=DEFAULT_PORT, metavar="PORT",
                   help=f"server port (default {DEFAULT_PORT})")
    p.add_argument("--operation-mode", choices=MODES, default=STEP,
                   help="step-by-step: wait for each ACK; burst: a window of messages in flight")
    p.add_argument("--max-size", type=int, default=DEFAULT_PACKET_SIZE, metavar="N",
                   help=f"largest DATA payload per packet to ask for (default {DEFAULT_PACKET_SIZE}); "
                   "larger messages are fragmented")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, metavar="N",
                   help=f"burst window to ask for (default {DEFAULT_WINDOW})")
    p.add_argument("--format", choices=FORMATS, default="binary",
                   help="message encoding (default binary)")
    p.add_argument("--count", type=int, default=None, metavar="N",
                   help="send --message/--file N times; with stdin, send at most N lines")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--message", metavar="TEXT", help="send TEXT instead of reading stdin")
    src.add_argument("--file", metavar="PATH", help="send the contents of PATH as one message")
    p.add_argument("--client-id", default=None, help="identifier to announce to the server")
    p.add_argument("--keepalive", type=float, default=DEFAULT_KEEPALIVE, metavar="SECONDS",
                   help=f"keepalive interval to ask for (default {DEFAULT_KEEPALIVE:g})")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="connect/handshake timeout and longest wait for one ACK (default 10)")
    p.add_argument("--transport", choices=TRANSPORTS, default="auto",
                   help="byte stream to use: gannet, tcp, or auto (gannet when available)")
    p.add_argument("-q", "--quiet", action="store_true", help="do not report every ACK")
    security.add_arguments(p)
    p.set_defaults(func=run)


def _say(text: str) -> None:
    print(safe_text(f"gannet client: {text}"), file=sys.stderr, flush=True)  # quotes the server


async def _stdin_lines() -> AsyncIterator[bytes]:
    """Lines of stdin (without their line ending), read by a daemon thread."""
    import asyncio

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    slots = threading.Semaphore(1024)  # lines read ahead, at most

    def lines():
        # os.read on the descriptor, not sys.stdin: a daemon thread blocked
        # inside a buffered reader can abort the interpreter at exit.
        fd = sys.stdin.fileno()
        pending = b""
        while chunk := os.read(fd, 65536):
            parts = chunk.split(b"\n")
            parts[0] = pending + parts[0]
            pending = parts.pop()
            for line in parts:
                yield line + b"\n"
        if pending:
            yield pending

    def pump() -> None:
        try:
            for line in lines():
                slots.acquire()
                loop.call_soon_threadsafe(queue.put_nowait, line)
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except Exception:  # noqa: BLE001 - loop closed or stdin broken: stop quietly
            try:
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except RuntimeError:
                pass

    threading.Thread(target=pump, name="gannet-client-stdin", daemon=True).start()
    while (line := await queue.get()) is not None:
        slots.release()
        if line.endswith(b"\n"):
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
        yield line


async def _payloads(args: argparse.Namespace) -> AsyncIterator[bytes]:
    if args.message is not None or args.file is not None:
        if args.message is not None:
            data = args.message.encode("utf-8")
        else:
            data = Path(args.file).read_bytes()
        for _ in range(1 if args.count is None else args.count):
            yield data
        return
    n = 0
    async for line in _stdin_lines():
        if args.count is not None and n >= args.count:
            break
        n += 1
        yield line


def run(args: argparse.Namespace) -> int:
    resolve_early(args.server_addr)

    import asyncio
    import functools

    from gannet.apps.messages.session import SessionError, connect
    from gannet.io.loops import run as run_loop

    if args.max_size < MIN_PACKET_SIZE:
        raise CLIError(f"--max-size must be at least {MIN_PACKET_SIZE}")
    if args.window < 1:
        raise CLIError("--window must be at least 1")
    if args.count is not None and args.count < 0:
        raise CLIError("--count must not be negative")
    if keepalive_problem(args.keepalive):
        raise CLIError(f"--keepalive: {keepalive_problem(args.keepalive)}")
    if not args.timeout > 0:
        raise CLIError("--timeout must be positive")
    if args.file is not None and not Path(args.file).is_file():
        raise CLIError(f"no such file: {args.file}")
    try:
        name, open_connection, _ = resolve(args.transport)
    except RuntimeError as exc:
        raise CLIError(str(exc)) from None
    if name == "gannet":
        open_connection = functools.partial(open_connection, **security.overrides(args, "client"))
    else:
        security.plaintext_transport(args, "client", "--transport tcp")

    def on_ack(seq: int) -> None:
        if not args.quiet:
            _say(f"ack seq={seq}")

    async def main() -> int:
        session = await connect(
            args.server_addr, args.server_port,
            mode=args.operation_mode, max_packet_size=args.max_size, window_size=args.window,
            keepalive_interval=args.keepalive, client_id=args.client_id, format=args.format,
            timeout=args.timeout, ack_timeout=args.timeout, on_ack=on_ack,
            open_connection=open_connection,
        )
        p = session.params
        _say(f"connected to {args.server_addr}:{args.server_port} "
             f"(transport {name}, format {session.format})")
        _say(f"session {p.session_id}: mode={p.operation_mode} max_packet_size={p.max_packet_size} "
             f"window={p.window_size} keepalive={p.keepalive_interval:g}s")
        for note in p.notes:
            _say(f"note: {note}")
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async for payload in _payloads(args):
                await session.send(payload)
            await session.wait_acked()
            seconds = loop.time() - started
            await session.disconnect()
        except BaseException:
            await session.aclose()
            raise
        s = session.stats
        rate = f" ({s.messages / seconds:,.0f} msg/s)" if s.messages and seconds > 0 else ""
        _say(f"{s.messages} messages ({s.bytes} bytes, {s.frames} packets) acknowledged "
             f"in {seconds:.3f} s{rate}; disconnected")
        return 0

    try:
        return run_loop(main())
    except SessionError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        if isinstance(exc, (ConnectionError, TimeoutError)):
            raise
        raise CLIError(f"cannot connect to {args.server_addr}:{args.server_port}: "
                       f"{exc.strerror or exc}") from None
