"""The `--wire` option the stream tools share: Gannet over UDP, or real TCP,
and for TCP the carrier: raw sockets or a TUN device (`--carrier tun`)."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # (typing not imported at run time: the parsers stay light)
if TYPE_CHECKING:
    from typing import Any

from gannet.cli.main import CLIError

WIRES = ("udp", "tcp")
CARRIERS = ("raw", "tun")


def add_wire_option(parser: argparse.ArgumentParser, carrier: str | None = None) -> None:
    """`--wire`; with `carrier` ("server" or "client"), `--carrier` too (and
    a client's `--tun-address`). Tools that open one connection per
    endpoint address can take the TUN carrier; others (bench opens several
    connections from one client) do not offer it."""
    parser.add_argument(
        "--wire", choices=WIRES, default="udp",
        help="udp: Gannet over UDP (default); tcp: the same engine speaking real TCP on raw "
        "sockets, interoperable with kernel TCP peers (IPv4, needs root; docs/tcp.md)")
    if carrier is None:
        return
    parser.add_argument(
        "--carrier", choices=CARRIERS, default="raw",
        help="with --wire tcp: raw (default): raw sockets on the host's addresses; tun: a TUN "
        "device owning an address of Gannet's own, with TSO and GRO (docs/tcp.md)"
        + ("; the address is --tun-address" if carrier == "client" else "; the address is --host"))
    if carrier == "client":
        parser.add_argument("--tun-address", metavar="ADDR",
                            help="with --carrier tun: the client's own address (one this host "
                            "does not have, routed back to it by the peer)")


def wire_settings(args: argparse.Namespace, client: bool = False) -> dict[str, Any]:
    """Config settings for the chosen carrier (with `client`, the TUN
    carrier's `local_addr` too, for open_connection); CLIError for a
    combination that cannot work."""
    if args.carrier == "raw":
        return {}
    if args.wire != "tcp":
        raise CLIError("--carrier tun needs --wire tcp")
    if hasattr(args, "tun_address") and not args.tun_address:
        raise CLIError("--carrier tun needs --tun-address (the client's own address)")
    settings: dict[str, Any] = {"tcp_carrier": args.carrier}
    if client:
        settings["local_addr"] = (args.tun_address, 0)
    return settings
