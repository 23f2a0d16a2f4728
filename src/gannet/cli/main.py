"""The one `gannet` entry point.

Each subcommand lives in its own module under `gannet.cli` and exposes
`register(subparsers)`, which adds its parser and sets `func` (called with the
parsed args, returning an exit code). Known errors are mapped to one line and
an exit code here, in one place; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import socket
import sys
from typing import NoReturn

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
    "identity",
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


def _add_debug_everywhere(parser: argparse.ArgumentParser) -> None:
    """`--debug` also after the command name (`gannet send --debug ...`); the
    suppressed default keeps a subcommand from resetting the top-level flag."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if not any("--debug" in a.option_strings for a in sub._actions):
                    sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                     help="show tracebacks on errors")
                _add_debug_everywhere(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("gannet: interrupted", file=sys.stderr)
        return 130
    except CLIError as exc:
        if args.debug:
            raise
        print(f"gannet: {exc}", file=sys.stderr)
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
