"""The `--wire` option the stream tools share: Gannet over UDP, or real TCP."""

from __future__ import annotations

import argparse

WIRES = ("udp", "tcp")


def add_wire_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wire", choices=WIRES, default="udp",
        help="udp: Gannet over UDP (default); tcp: the same engine speaking real TCP on raw "
        "sockets, interoperable with kernel TCP peers (IPv4, needs root; docs/tcp.md)")
