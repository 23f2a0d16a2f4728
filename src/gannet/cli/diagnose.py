"""`gannet diagnose QLOG...`: what limited each traced connection."""

from __future__ import annotations

import argparse
import json
import os

from gannet.cli.main import CLIError, summary
from gannet.observe import diagnose, qlog


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "diagnose",
        help=summary("diagnose"),
        description="Read qlog traces written with --qlog (a file, or a directory of them) and "
        "say for each sending connection what limited it - the receiver's window (a slow reader "
        "or a window too small for the path), the congestion window after loss, pacing at the "
        "path's rate, the application, the CPU or the path MTU - with the numbers that show it.",
    )
    p.add_argument("traces", nargs="+", metavar="QLOG", help="qlog file or directory")
    p.add_argument("--json", action="store_true", help="one JSON object per trace on stdout")
    p.add_argument("--all", action="store_true", help="also traces of connections that sent nothing")
    p.set_defaults(func=run, serves_stats=False)


def _paths(items: list[str]) -> list[str]:
    out = []
    for item in items:
        if os.path.isdir(item):
            out.extend(sorted(os.path.join(item, f) for f in os.listdir(item) if f.endswith(qlog.SUFFIX)))
        elif os.path.exists(item):
            out.append(item)
        else:
            raise CLIError(f"no such file or directory: {item}")
    if not out:
        raise CLIError("no qlog traces found")
    return out


def run(args: argparse.Namespace) -> int:
    for path in _paths(args.traces):
        try:
            verdict, info = diagnose.from_qlog(path)
        except (OSError, ValueError) as exc:
            raise CLIError(f"{path}: {exc}") from None
        if not args.all and not info.get("bytes_sent") and not info.get("busy_time"):
            continue  # a receiver: nothing it sent was held back
        if args.json:
            print(json.dumps({"file": path, "cause": verdict.cause, "text": verdict.text,
                              "numbers": verdict.numbers}))
        else:
            role = info.get("role", "?")
            print(f"{os.path.basename(path)} ({role}, {info.get('bytes_acked', info.get('bytes_sent', 0))} bytes "
                  f"sent in {info.get('age', 0.0):.2f} s): {verdict.line()}")
    return 0
