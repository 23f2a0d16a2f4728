"""The one `gannet` entry point.

Each subcommand lives in its own module under `gannet.cli` and exposes
`register(subparsers)`, which adds its parser and sets `func` (called with the
parsed args, returning an exit code). Known errors are mapped to one line and
an exit code here, in one place; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import socket
import sys
from typing import NoReturn

from gannet.apps.display import safe_text

# Subcommand modules, in the order `gannet --help` lists them.
SUBCOMMANDS = [
    "demo",
    "chat",
    "send",
    "receive",
    "server",
    "client",
    "echo",
    "tunnel",
    "bench",
    "netlab",
    "tcp",
    "stats",
    "diagnose",
    "plot",
    "wireshark",
]


class CLIError(Exception):
    """An error the user can act on: printed as one line, exit code 1."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), like every
    other known error; the full usage is one `--help` away. Subcommand
    parsers are made from this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="gannet",
        description="Gannet: a reliable transport over UDP, and the tools that use it.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    _add_observe_options(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"gannet.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"gannet.cli.{name}":
                continue  # subcommand not shipped in this build
            raise
        module.register(subparsers)
    _add_debug_everywhere(parser)
    return parser


def _add_observe_options(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """The observability options every command takes (docs/observability.md)."""
    default = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("observing")
    group.add_argument("--qlog", metavar="DIR", default=default,
                       help="write one qlog trace per connection into DIR")
    group.add_argument("--pcap", metavar="FILE", default=default,
                       help="write every datagram sent and received to FILE (pcap)")
    group.add_argument("--no-stats", action="store_true", default=False if top else argparse.SUPPRESS,
                       help="open no stats socket for `gannet stats` (also GANNET_NO_STATS=1)")


def _add_debug_everywhere(parser: argparse.ArgumentParser) -> None:
    """`--debug` (and the observing options) also after the command name
    (`gannet send --debug ...`); the suppressed default keeps a subcommand
    from resetting the top-level flag."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if not any("--debug" in a.option_strings for a in sub._actions):
                    sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                     help="show tracebacks on errors")
                if not any("--qlog" in a.option_strings for a in sub._actions):
                    _add_observe_options(sub)
                _add_debug_everywhere(sub)


def _start_observing(args: argparse.Namespace) -> None:
    """Apply --qlog / --pcap / the stats socket to every endpoint this
    process makes."""
    from .. import observe

    if args.qlog:
        try:
            os.makedirs(args.qlog, exist_ok=True)
        except OSError as exc:
            raise CLIError(f"--qlog {args.qlog}: {exc.strerror or exc}") from None
    if args.pcap:
        try:
            open(args.pcap, "ab").close()
        except OSError as exc:
            raise CLIError(f"--pcap {args.pcap}: {exc.strerror or exc}") from None
    observe.configure(qlog_dir=args.qlog, pcap_path=args.pcap)
    # (netlab runs no Gannet connection; stats, plot, diagnose and wireshark
    # say serves_stats=False themselves)
    serves = getattr(args, "serves_stats", True) and args.command != "netlab"
    if serves and not args.no_stats and not _env_on("GANNET_NO_STATS"):
        from ..observe import control

        control.start_server()


def _setup_logging(debug: bool) -> None:
    """The library's log records (logger "gannet") on stderr: warnings, or
    everything with --debug; GANNET_LOG=LEVEL picks another level."""
    logger = logging.getLogger("gannet")
    if any(not isinstance(h, logging.NullHandler) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "gannet: %(name)s %(levelname)s: %(message)s" if debug else "gannet: %(message)s"))
    logger.addHandler(handler)
    level = os.environ.get("GANNET_LOG", "DEBUG" if debug else "WARNING").upper()
    logger.setLevel(getattr(logging, level, logging.WARNING))


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").lower() not in ("", "0", "false", "no")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    _setup_logging(args.debug)
    try:
        _start_observing(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("gannet: interrupted", file=sys.stderr)
        return 130
    except CLIError as exc:
        if args.debug:
            raise
        print(safe_text(f"gannet: {exc}"), file=sys.stderr)  # may quote a peer's words
        return exc.code
    except (ConnectionError, TimeoutError, OSError) as exc:
        if args.debug:
            raise
        print(f"gannet: {describe_os_error(exc)}", file=sys.stderr)
        return 1


def describe_os_error(exc: BaseException) -> str:
    """One human line for the OS and connection errors users meet."""
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: {exc}" if str(exc) else "connection refused"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset by peer: {exc}" if str(exc) else "connection reset by peer"
    if isinstance(exc, TimeoutError):
        return f"timed out: {exc}" if str(exc) else "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {exc.strerror or exc}"
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}"
    return str(exc) or exc.__class__.__name__


if __name__ == "__main__":
    sys.exit(main())
