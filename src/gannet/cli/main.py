"""The one `gannet` entry point.

Each subcommand lives in its own module under `gannet.cli` and exposes
`register(subparsers)`, which adds its parser and sets `func` (called with the
parsed args, returning an exit code). Known errors are mapped to one line and
an exit code here, in one place; `--debug` shows the traceback instead.

Only the module of the command being run is imported (`gannet --help` lists
the commands from `COMMANDS` below without importing any), and the modules
import what their command needs inside the function that runs it: a command
line starts in tens of milliseconds, not the quarter second that asyncio,
numpy and rich take to load.
"""

from __future__ import annotations

import argparse
import sys

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing)
if TYPE_CHECKING:
    from typing import NoReturn

# Command name -> (its module under gannet.cli, its one-line help), in the
# order `gannet --help` lists them. The modules' parsers take their help from
# here (`summary`), so the list and the parsers cannot disagree.
COMMANDS = {
    "demo": ("demo", "transfer a file across a lossy simulated network and verify it"),
    "chat": ("chat", "chat and send files with one peer (the same command on both sides)"),
    "send": ("send", "send files or directories to `gannet receive`"),
    "receive": ("receive", "receive files from `gannet send` into a directory"),
    "server": ("server", "serve the message protocol: print and acknowledge messages"),
    "client": ("client", "send messages to a gannet server (lines of stdin by default)"),
    "echo-server": ("echo", "echo every byte back to every client (a thread per client)"),
    "echo": ("echo", "send lines to an echo server and print the echoes"),
    "tunnel": ("tunnel", "forward TCP connections over Gannet (port forwarding)"),
    "bench": ("bench", "measure goodput between a bench server and client (like iperf3)"),
    "netlab": ("netlab", "emulated network of namespaces (root)"),
}


def summary(command: str) -> str:
    """The one-line help of `command` (for its module's parser)."""
    return COMMANDS[command][1]


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


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: the command it names gets its module's full
    parser; the others, a placeholder carrying their help line. With argv
    None every command's module is imported (for tests and documentation)."""
    import importlib

    parser = Parser(
        prog="gannet",
        description="Gannet: a reliable transport over UDP, and the tools that use it.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = COMMANDS.get(_command_in(argv) or "") if argv is not None else None
    registered: set[str] = set()
    for name, (module_name, help_line) in COMMANDS.items():
        if name in registered:
            continue  # (a module registering two commands: echo)
        if argv is not None and (wanted is None or module_name != wanted[0]):
            subparsers.add_parser(name, help=help_line)
            continue
        try:
            module = importlib.import_module(f"gannet.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"gannet.cli.{module_name}":
                continue  # subcommand not shipped in this build
            raise
        before = set(subparsers.choices)
        module.register(subparsers)
        registered |= set(subparsers.choices) - before
    _add_debug_everywhere(parser)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The command `argv` names: its first word that is not an option (the
    top-level parser's only options, --debug and --help, take no value)."""
    for word in argv:
        if word == "--":
            continue
        if not word.startswith("-"):
            return word
    return None


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
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
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
        from gannet.apps.display import safe_text

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
    import socket

    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {exc.strerror or exc}"
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}"
    return str(exc) or exc.__class__.__name__


if __name__ == "__main__":
    sys.exit(main())
