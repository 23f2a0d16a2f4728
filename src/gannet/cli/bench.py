"""`gannet bench server` / `gannet bench client HOST:PORT`: goodput, iperf3-style.

The client prints the test's parameters, one line per interval (from the
sending side's connections: bytes delivered, goodput, retransmissions, cwnd,
srtt) and a summary (goodput, retransmissions, RTT, CPU seconds of both ends
and per GB, verified or FAILED) on stderr; `--json` puts one JSON object on
stdout as well. See docs/bench.md.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gannet.cli import security
from gannet.cli.main import CLIError, resolve_early, summary
from gannet.cli.wireopt import add_wire_option
from gannet.cli.units import positive_duration, positive_size
from gannet.config import CONGESTION_CONTROLS

# (The test itself, gannet.apps.bench, is imported by the command that runs:
# building the parser loads neither the event loop nor the core.)

DEFAULT_PORT = 5201


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help=summary("bench"),
        description="Measure goodput over Gannet: `gannet bench server` on one side, "
        "`gannet bench client HOST:PORT` on the other. The data is a deterministic "
        "pattern the receiver verifies (byte count and CRC32C).",
    )
    sub = p.add_subparsers(dest="bench_command", metavar="ROLE")
    sub.required = True

    s = sub.add_parser("server", help="wait for bench clients (one test at a time)",
                       description="Run tests for bench clients, one at a time; a client "
                       "that comes during a test is told the server is busy.")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=_port, default=DEFAULT_PORT,
                   help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    s.add_argument("--once", action="store_true", help="exit after one test")
    add_wire_option(s)
    security.add_arguments(s, peer_key=False)
    s.set_defaults(func=run_server)

    c = sub.add_parser("client", help="run a test against a bench server",
                       description="Run one test against `gannet bench server` at HOST:PORT.")
    c.add_argument("target", metavar="HOST:PORT", help="where `gannet bench server` listens")
    add_wire_option(c)
    amount = c.add_mutually_exclusive_group()
    amount.add_argument("--bytes", "-n", type=_size, default=None, metavar="N",
                        help="send this many bytes in total, e.g. 20MB or 1GiB")
    amount.add_argument("--time", "-t", type=_duration, default=None, metavar="SECONDS",
                        help="send for this long (default 10s)")
    c.add_argument("--parallel", "-P", type=_parallel, default=1, metavar="K",
                   help="K connections at once; results are summed (default 1)")
    c.add_argument("--reverse", "-R", action="store_true",
                   help="the server sends and the client receives")
    c.add_argument("--mtu", type=int, default=None, metavar="N",
                   help="largest datagram (UDP payload) in bytes, pinned for the test "
                   "(default: Gannet's 1472)")
    c.add_argument("--cc", default=None, metavar="NAME",
                   help="congestion control by name (available: "
                   f"{', '.join(sorted(CONGESTION_CONTROLS))})")
    c.add_argument("--interval", "-i", type=_duration, default=1.0, metavar="SECONDS",
                   help="report every this long (default 1s)")
    c.add_argument("--json", action="store_true",
                   help="print the result as one JSON object on stdout")
    c.add_argument("--connect-timeout", type=_duration, default=10.0, metavar="SECONDS",
                   help="give up connecting after this long (default 10s)")
    security.add_arguments(c)
    c.set_defaults(func=run_client_cmd)


# ------------------------------------------------------------------ arguments
_duration = positive_duration
_size = positive_size


def _parallel(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 128:
        raise argparse.ArgumentTypeError("must be between 1 and 128")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError("must be between 0 and 65535")
    return value


def parse_target(text: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CLIError(f"target must be HOST:PORT, not {text!r}", code=2)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def log(msg: str) -> None:
    print(f"gannet bench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- server
def run_server(args: argparse.Namespace) -> int:
    from gannet.apps.bench import BenchServer
    from gannet.io.loops import run as run_loop

    async def main() -> int:
        server = BenchServer(args.host, args.port, once=args.once, log=log, wire=args.wire,
                             security=security.overrides(args, "bench server"))
        host, port = await server.start()
        log(f"listening on {host}:{port}")
        await server.serve()
        return 0

    try:
        return run_loop(main())
    except OSError as exc:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: "
                       f"{exc.strerror or exc}") from None


# --------------------------------------------------------------------- client
COLUMNS = ("interval", "bytes", "goodput", "retr", "cwnd", "srtt")


def _row(rec: dict[str, Any]) -> tuple[str, ...]:
    from gannet.apps.bench import fmt_rate, fmt_rtt, human_bytes

    cwnd = rec.get("cwnd")
    return (
        f"{rec['start']:6.2f}-{rec['end']:.2f} s",
        human_bytes(rec["bytes"]),
        fmt_rate(rec["goodput_bps"]),
        str(rec["retransmits"]),
        human_bytes(cwnd) if cwnd is not None else "-",
        fmt_rtt(rec.get("srtt")),
    )


class PlainReport:
    """Aligned plain text, for pipes and logs."""

    WIDTHS = (17, 10, 14, 6, 10, 9)

    def __init__(self) -> None:
        self.header_done = False

    def line(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def _fmt(self, cells: tuple[str, ...]) -> str:
        first, *rest = cells
        return f"{first:<{self.WIDTHS[0]}}" + "".join(
            f"{c:>{w}}" for c, w in zip(rest, self.WIDTHS[1:]))

    def interval(self, rec: dict[str, Any]) -> None:
        if not self.header_done:
            self.header_done = True
            self.line(self._fmt(COLUMNS))
        self.line(self._fmt(_row(rec)))

    def finish(self) -> None:
        pass


class RichReport:
    """A live rich table, for terminals."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.table import Table

        self.console = Console(stderr=True)
        self.table = Table(box=None, padding=(0, 1), header_style="bold")
        for i, name in enumerate(COLUMNS):
            self.table.add_column(name, justify="left" if i == 0 else "right")
        self.live = Live(self.table, console=self.console, refresh_per_second=8,
                         transient=False)
        self.started = False

    def line(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def interval(self, rec: dict[str, Any]) -> None:
        if not self.started:
            self.started = True
            self.live.start()
        self.table.add_row(*_row(rec))

    def finish(self) -> None:
        if self.started:
            self.live.stop()
            self.started = False


def run_client_cmd(args: argparse.Namespace) -> int:
    host, port = parse_target(args.target)
    resolve_early(host)

    import asyncio
    import json
    import socket

    from gannet.apps.bench import BenchError, Params, human_bytes, run_client
    from gannet.crypto.endpoint import HandshakeFailed
    from gannet.io.loops import run as run_loop

    params = Params(
        reverse=args.reverse, parallel=args.parallel, bytes=args.bytes,
        time=args.time if args.time is not None else 10.0, interval=args.interval,
        mtu=args.mtu, cc=args.cc,
    )
    try:
        params.validate()
    except BenchError as exc:
        raise CLIError(str(exc), code=2) from None

    report = RichReport() if sys.stderr.isatty() else PlainReport()
    amount = (f"{human_bytes(params.bytes)}" if params.bytes is not None
              else f"{params.time:g} s")
    direction = "server -> client (reverse)" if params.reverse else "client -> server"

    def on_start(info: dict[str, Any]) -> None:
        mtu = f"datagram {info['datagram_size']} B (mss {info['mss']})"
        if params.mtu is not None:
            mtu += ", pinned by --mtu"
        report.line(f"test {params.test_id}: {direction}, {amount}, "
                    f"{params.parallel} stream{'s' if params.parallel > 1 else ''}, "
                    f"interval {params.interval:g} s, {mtu}, cc {info['cc']}")

    settings = security.overrides(args, "bench client")
    log(f"connecting to {host}:{port}")
    try:
        result = run_loop(run_client(host, port, params,
                                        connect_timeout=args.connect_timeout, wire=args.wire,
                                        on_start=on_start, on_interval=report.interval,
                                        security=settings))
    except socket.gaierror as exc:
        raise CLIError(f"cannot resolve {host}: {exc.strerror or exc}") from None
    except HandshakeFailed as exc:
        raise CLIError(f"cannot connect to {host}:{port}: {exc}") from None
    except ConnectionRefusedError:
        raise CLIError(f"cannot connect to {host}:{port}: connection refused "
                       "(is `gannet bench server` running there?)") from None
    except TimeoutError:
        raise CLIError(f"cannot reach {host}:{port}: timed out") from None
    except BenchError as exc:
        raise CLIError(str(exc)) from None
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        raise CLIError(f"test interrupted: {exc or type(exc).__name__}") from None
    finally:
        report.finish()

    summarize(result, report.line)
    if args.json:
        print(json.dumps(result), flush=True)
    return 0 if result["verified"] else 1


def summarize(r: dict[str, Any], out) -> None:
    from gannet.apps.bench import fmt_rate, fmt_rtt, human_bytes

    gb = r["bytes"] / 1e9
    per_gb = f"{r['cpu_seconds_per_gb']:.1f} CPU s/GB" if r["cpu_seconds_per_gb"] else "- CPU s/GB"
    check = "verified (count + CRC32C)" if r["verified"] else "FAILED"
    out("- " * 33)
    span = f"{0:6.2f}-{r['seconds']:.2f} s"
    out(f"{span:<17}{human_bytes(r['bytes']):>10}"
        f"{fmt_rate(r['goodput_bps']):>14}{r['retransmits']:>6}   {check}")
    out(f"goodput   {fmt_rate(r['goodput_bps'])}: {human_bytes(r['bytes'])} delivered in "
        f"{r['seconds']:.2f} s over {r['parallel']} stream{'s' if r['parallel'] > 1 else ''}")
    out(f"retrans   {r['retransmits']} segments")
    if r.get("datagram_size"):
        out(f"datagram  {r['datagram_size']} B at the end (mss {r['mss']})"
            + (", pinned by --mtu" if r.get("mtu") else ""))
    out(f"rtt       srtt {fmt_rtt(r['srtt'])}, min {fmt_rtt(r['min_rtt'])}")
    out(f"cpu       client {r['cpu_seconds_client']:.2f} s + server "
        f"{r['cpu_seconds_server']:.2f} s = {r['cpu_seconds']:.2f} s, {per_gb}"
        + (f" ({gb:.3f} GB)" if gb < 0.1 else ""))
    if r.get("error"):
        out(f"error     {r['error']}")
    bad = [s["stream"] for s in r["streams"] if not s["verified"]]
    if bad:
        out(f"data      FAILED on stream{'s' if len(bad) > 1 else ''} "
            f"{', '.join(map(str, bad))}: " + "; ".join(
                f"{s['bytes']} of {s['sent']} bytes" for s in r["streams"] if not s["verified"]))
    else:
        out("data      verified: every byte count and CRC32C matches")
    if r.get("verdict"):
        out(f"verdict   {r['verdict']['line']}")
