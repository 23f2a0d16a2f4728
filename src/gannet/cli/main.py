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
    from typing import Any, NoReturn

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
    "tcp": ("tcp", "real TCP from user space: connect to a kernel TCP server, or run a test server"),
    "stats": ("stats", "list live connections of running Gannet processes (like ss -ti)"),
    "diagnose": ("diagnose", "say what limited a transfer, from its qlog trace"),
    "plot": ("plot", "draw a qlog trace: time-sequence graph, cwnd, RTT, goodput (PNG)"),
    "wireshark": ("wireshark", "print where the Wireshark dissector for Gannet is, or install it"),
    "id": ("identity", "show this machine's identity key and fingerprint"),
    "trust": ("identity", "list, add or remove pinned server keys"),
}

# The commands that run on gannet.io.loops.run, which ends the collector's
# start-up pause when their loop first waits (gannet._startup); any other
# command ends it as its work begins.
_ON_THE_LOOP = frozenset({"send", "receive", "client", "server", "chat", "tunnel", "bench"})

# Top-level options that take a value (`_command_in` skips the value).
_VALUED = ("--qlog", "--pcap")


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

    _checking = False  # (inside add_argument)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")

    # argparse makes a help formatter in add_argument only to check the
    # argument's metavar against its nargs, which no width changes; but a
    # formatter measures the terminal (shutil, which brings bz2 and lzma) when
    # made: a command would load them on its way to its work. Help that is
    # shown still gets the terminal's width.
    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        self._checking = True
        try:
            return super().add_argument(*args, **kwargs)
        finally:
            self._checking = False

    def _get_formatter(self) -> argparse.HelpFormatter:
        if self._checking:
            # (argparse's formatters all take a width; its stub's protocol names only prog)
            return self.formatter_class(prog=self.prog, width=80)  # type: ignore[call-arg]
        return super()._get_formatter()


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: the command it names gets its module's full
    parser and no other is made; without one (`gannet --help`, a mistyped
    command) every command gets a placeholder carrying its help line. With
    argv None every command's module is imported (for tests and
    documentation)."""
    import importlib

    parser = Parser(
        prog="gannet",
        description="Gannet: a reliable transport over UDP, and the tools that use it.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    _add_observe_options(parser, top=True)
    # (prog given: argparse would make it, "gannet" and the positionals
    # before the command, of which there are none, with a help formatter)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", prog=parser.prog)
    wanted = COMMANDS.get(_command_in(argv) or "") if argv is not None else None
    registered: set[str] = set()
    for name, (module_name, help_line) in COMMANDS.items():
        if name in registered:
            continue  # (a module registering two commands: echo)
        if argv is not None and (wanted is None or module_name != wanted[0]):
            if wanted is None:  # (a command's own line parses with its parser alone)
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
    """The command `argv` names: its first word that is neither an option
    nor the value of a top-level option that takes one (--qlog, --pcap)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == "--":
            continue
        if word in _VALUED:
            skip = True
            continue
        if not word.startswith("-"):
            return word
    return None


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
    import os

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
    from .. import observe

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
    import logging
    import os

    logger = logging.getLogger("gannet")
    if any(not isinstance(h, logging.NullHandler) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "gannet: %(name)s %(levelname)s: %(message)s" if debug else "gannet: %(message)s"))
    logger.addHandler(handler)
    level = os.environ.get("GANNET_LOG", "DEBUG" if debug else "WARNING").upper()
    logger.setLevel(getattr(logging, level, logging.WARNING))


def resolve_early(host: str) -> None:
    """Warm the system resolver for `host` on a thread, while the command
    loads its modules: the first `getaddrinfo` of a process (even for
    "localhost", from /etc/hosts) loads the resolver's modules and reads
    its configuration, 10-25 ms that the connection would otherwise wait
    for before its first datagram. The lookup itself runs again when the
    connection is made (its answer and its errors are that one's); an
    address typed as such needs no resolver."""
    import socket

    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return
        except (OSError, ValueError):
            pass

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError):
            pass  # (reported by the real lookup)

    import threading

    threading.Thread(target=lookup, name="gannet-resolve", daemon=True).start()


def _env_on(name: str) -> bool:
    import os

    return os.environ.get(name, "").lower() not in ("", "0", "false", "no")


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        # The process's own command line: no collection walks what start-up
        # makes until the command's loop first waits (gannet._startup).
        from .. import _startup

        _startup.pause()
        try:
            return _main(sys.argv[1:], own=True)
        finally:
            _startup.resume(freeze=False)  # (a command that ran no loop)
    return _main(argv)


def _main(argv: list[str], own: bool = False) -> int:
    """`own`: the process's own command line (not a program's call of
    `main(argv)`), which may start work in a child process (`ahead`)."""
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    ahead = getattr(args, "ahead", None) if own else None
    if ahead is not None:
        # Work the command will wait for, started before anything else it
        # loads (and before the stats socket's thread): gannet.io.spake_child.
        ahead(args)
    _setup_logging(args.debug)
    if args.command not in _ON_THE_LOOP:
        from .. import _startup

        _startup.resume()  # (no loop of ours will: an echo server or netlab runs for long)
    try:
        _start_observing(args)
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
    finally:
        if ahead is not None:
            from ..crypto.spake import discard_offered

            discard_offered()  # (an exchange no handshake took: its child exits)


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
