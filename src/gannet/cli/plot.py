"""`gannet plot QLOG`: a qlog trace as a PNG (needs the `plot` extra)."""

from __future__ import annotations

import argparse
import os

from gannet.cli.main import CLIError, summary


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plot",
        help=summary("plot"),
        description="Draw a qlog trace written with --qlog as a PNG: a Stevens-style "
        "time-sequence graph (data sent, retransmissions, losses, ACKs, SACK blocks), the "
        "congestion window and bytes in flight, RTTs and goodput over time. Needs matplotlib "
        "(pip install 'gannet[plot]').",
    )
    p.add_argument("trace", metavar="QLOG", help="a .sqlog file")
    p.add_argument("-o", "--output", metavar="PNG", help="where to write (default: QLOG with .png)")
    p.add_argument("--title", help="the picture's title")
    p.set_defaults(func=run, serves_stats=False)


def run(args: argparse.Namespace) -> int:
    from gannet.observe import plot

    out = args.output or os.path.splitext(args.trace)[0] + ".png"
    try:
        info = plot.render(args.trace, out, title=args.title)
    except RuntimeError as exc:
        raise CLIError(str(exc)) from None
    except ValueError as exc:
        raise CLIError(f"{args.trace}: {exc}") from None
    print(f"gannet plot: {out}: {info['points']} data segments ({info['resent']} resent), "
          f"{info['acks']} ACKs over {info['t_end']:.2f} s")
    return 0
