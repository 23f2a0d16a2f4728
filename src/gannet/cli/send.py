"""`gannet send FILE_OR_DIR... HOST:PORT`: send files and directories to `gannet receive`."""

from __future__ import annotations

import argparse

from gannet.apps.transfer import COMPRESS_MODES
from gannet.cli import security
from gannet.cli.main import CLIError, resolve_early, summary
from gannet.cli.units import positive_duration, positive_rate
from gannet.cli.wireopt import add_wire_option, wire_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "send",
        help=summary("send"),
        description="Send files and directories (relative paths kept) to a `gannet receive` "
        "at HOST:PORT. Every file is verified by SHA-256 at the receiver; an interrupted "
        "transfer resumes where it stopped when you run the same command again.",
    )
    p.add_argument("paths", nargs="+", metavar="FILE_OR_DIR", help="what to send")
    p.add_argument("target", metavar="HOST:PORT", help="where `gannet receive` listens")
    add_wire_option(p, carrier="client")
    p.add_argument("--compress", choices=COMPRESS_MODES, default="auto",
                   help="zstd per 1 MiB chunk: auto (only for data that compresses, the "
                   "default), zstd (always) or none")
    p.add_argument("--limit-rate", type=_rate, default=None, metavar="RATE",
                   help="cap the file bytes per second, e.g. 10MB/s or 80mbit")
    p.add_argument("--connect-timeout", type=_duration, default=10.0, metavar="SECONDS",
                   help="give up connecting after this long (default 10s)")
    p.add_argument("--idle-timeout", type=_duration, default=30.0, metavar="SECONDS",
                   help="give up when nothing is heard from the receiver for this long "
                   "(default 30s; a receiver that vanished is otherwise retried for minutes)")
    security.add_arguments(p, code="the code `gannet receive` printed (its `code:` line)")
    p.set_defaults(func=run, ahead=security.start_code_exchange)


def _rate(text: str) -> float:
    return positive_rate(text) / 8  # bytes per second


_duration = positive_duration


def parse_target(text: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CLIError(f"target must be HOST:PORT, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    host, port = parse_target(args.target)
    resolve_early(host)

    import asyncio
    import socket

    from gannet.apps.transfer.progress import Reporter, human_size
    from gannet.apps.transfer.protocol import ProtocolError
    from gannet.apps.transfer.sender import TransferError, collect, send_files
    from gannet.crypto.endpoint import HandshakeFailed
    from gannet.io.loops import run as run_loop

    settings = {**security.overrides(args, "send"), **wire_settings(args, client=True)}
    rep = Reporter("send")
    try:
        try:
            files, dirs = collect(args.paths, warn=rep.log)
        except FileNotFoundError as exc:
            raise CLIError(f"no such file or directory: {exc.filename}") from None
        except (ValueError, PermissionError) as exc:
            raise CLIError(str(exc)) from None
        if not files and not dirs:
            raise CLIError("nothing to send")
        try:
            result = run_loop(send_files(
                host, port, files, dirs, compress=args.compress, reporter=rep,
                rate=args.limit_rate, connect_timeout=args.connect_timeout,
                idle_timeout=args.idle_timeout, wire=args.wire, track_limits=True, **settings,
            ))
        except socket.gaierror as exc:
            raise CLIError(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
        except HandshakeFailed as exc:
            raise CLIError(f"cannot connect to {host}:{port}: {exc}") from None
        except ConnectionRefusedError:
            raise CLIError(f"cannot connect to {host}:{port}: connection refused "
                           "(is `gannet receive` running there?)") from None
        except TimeoutError:
            raise CLIError(f"cannot reach {host}:{port}: timed out") from None
        except (TransferError, ProtocolError) as exc:
            raise CLIError(str(exc)) from None
        except asyncio.IncompleteReadError:
            raise CLIError("the receiver closed the connection mid-transfer") from None
        except ConnectionError as exc:
            raise CLIError(f"transfer interrupted: {exc or type(exc).__name__}") from None
    finally:
        rep.close()
    rate = result.sent_bytes / result.seconds if result.seconds > 0 else 0.0
    wire = f", {human_size(result.wire_bytes)} on the wire" if result.wire_bytes != result.sent_bytes else ""
    rep.log(f"done: {len(result.ok)} verified, {len(result.failed)} failed; "
            f"{human_size(result.sent_bytes)} sent{wire} in {result.seconds:.2f} s "
            f"({human_size(rate)}/s)")
    if result.info is not None and result.sent_bytes:
        from gannet.observe import diagnose

        verdict = diagnose.judge(result.info, seconds=result.seconds, cpu_seconds=result.cpu_seconds)
        rep.log(f"verdict: {verdict.line()}")
    return 1 if result.failed else 0
