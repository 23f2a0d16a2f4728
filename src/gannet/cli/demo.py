"""`gannet demo`: a file crosses a hostile simulated network, and is verified.

A server and a client run in this process on Gannet's deterministic network
simulator: delay, jitter, loss (random or bursty), duplication, reordering and
corruption, as chosen. The demo transfers a file (or generated data), checks
its SHA-256 on arrival, and prints what the protocol did to get it there.

The connection is encrypted and authenticated, as every Gannet connection is
by default (docs/security.md): the server has a key made for the demo, the
client pins it, and every datagram after the handshake is sealed. With
--insecure it runs in clear.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

from .main import CLIError, summary
from .security import warn_insecure
from .units import parse_duration, parse_percent, parse_rate, parse_size


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help=summary("demo"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", nargs="?", help="file to send (default: generated data)")
    p.add_argument("--size", default="4MB", help="generated data size when no file is given (default 4MB)")
    p.add_argument("--delay", default="20ms", help="one-way delay (default 20ms)")
    p.add_argument("--jitter", default="5ms", help="uniform jitter added to the delay (default 5ms)")
    p.add_argument("--loss", default="2%", help="random loss per direction (default 2%%)")
    p.add_argument("--burst-loss", action="store_true", help="bursty (Gilbert-Elliott) loss instead of random")
    p.add_argument("--duplicate", default="1%", help="duplication probability (default 1%%)")
    p.add_argument("--reorder", default="2%", help="reordering probability (default 2%%)")
    p.add_argument("--corrupt", default="0.5%", help="bit-corruption probability (default 0.5%%)")
    p.add_argument("--rate", default="50mbit", help="bottleneck rate, e.g. 50mbit (default 50mbit)")
    p.add_argument("--cc", default=None, help="congestion control (default: the configured default, bbr)")
    p.add_argument("--seed", type=int, default=1, help="random seed: the same seed replays the same run")
    p.add_argument("--insecure", action="store_true",
                   help="run the connection in clear, without encryption or authentication")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..config import Config
    from ..crypto.identity import fingerprint, public_key
    from ..crypto.protection import AES_128_GCM, CHACHA20_POLY1305, choose_aead
    from ..io.security import has_aes
    from ..sim import LinkConfig
    from ..sim.scenario import encrypted_pair, run_transfer

    aead_names = {AES_128_GCM: "AES-128-GCM", CHACHA20_POLY1305: "ChaCha20-Poly1305"}
    err = Console(stderr=True)
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise CLIError(f"no such file: {path}")
        data = path.read_bytes()
        label = str(path)
    else:
        data = os.urandom(_option(parse_size, "--size", args.size))
        label = f"{len(data):,} random bytes"
    delay = _option(parse_duration, "--delay", args.delay)
    loss = _option(parse_percent, "--loss", args.loss)
    common = dict(
        delay=delay,
        jitter=_option(parse_duration, "--jitter", args.jitter),
        preserve_order=True,  # jitter varies delay; reordering is its own knob
        duplicate=_option(parse_percent, "--duplicate", args.duplicate),
        reorder=_option(parse_percent, "--reorder", args.reorder),
        reorder_delay=delay / 2 + 0.001,
        corrupt=_option(parse_percent, "--corrupt", args.corrupt),
    )
    if args.burst_loss:
        lossy = dict(p_good_to_bad=loss / 3, p_bad_to_good=0.3, loss_in_bad=0.9)
    else:
        lossy = dict(loss=loss)
    rate = _option(parse_rate, "--rate", args.rate)
    forward = LinkConfig(bandwidth=rate, queue_bytes=max(64_000, int(rate / 8 * delay * 2)), **common, **lossy)
    backward = LinkConfig(**common, **lossy)
    try:
        config = Config(congestion_control=args.cc) if args.cc else Config()
    except ValueError as exc:
        raise CLIError(f"--cc: {exc}") from None
    if args.insecure:
        warn_insecure("demo")
        pair = None
    else:
        pair = encrypted_pair(has_aes=has_aes())
    err.print(f"[bold]Gannet demo[/]: sending {label} across a simulated network")
    err.print(
        f"  link: {args.delay} delay, {args.jitter} jitter, {args.loss} {'bursty ' if args.burst_loss else ''}loss, "
        f"{args.duplicate} duplication, {args.reorder} reordering, {args.corrupt} corruption, {args.rate}"
    )
    if pair is None:
        err.print("  security: [bold red]none (--insecure)[/]: the data crosses the network in clear")
    else:
        assert pair[1].static is not None
        aead = aead_names[choose_aead(pair[0].has_aes, pair[1].has_aes)]
        err.print(f"  security: encrypted ({aead}) and authenticated: the server's key "
                  f"{fingerprint(public_key(pair[1].static))} (made for this demo) is pinned by the client")
    started = time.perf_counter()
    result = run_transfer(args.seed, len(data), forward, backward, config=config, data=data,
                          security=pair)
    wall = time.perf_counter() - started
    sent_digest = hashlib.sha256(data).hexdigest()

    table = Table(title="What happened", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("bytes delivered", f"{result.received:,} of {len(data):,}")
    table.add_row("SHA-256", f"{sent_digest[:16]}... {'[green]verified[/]' if result.intact else '[red]MISMATCH[/]'}")
    table.add_row("transfer time", f"{result.data_time:.2f} s simulated ({wall:.2f} s of real CPU time)")
    table.add_row("goodput", f"{result.goodput * 8 / 1e6:.1f} Mbit/s over a {args.rate} link")
    cs, ss = result.client_stats, result.server_stats
    table.add_row("segments sent", f"{cs.get('segments_sent', 0):,} by the client, {ss.get('segments_sent', 0):,} by the server")
    table.add_row(
        "retransmissions",
        f"{cs.get('retransmits', 0):,} ({cs.get('fast_recoveries', 0)} fast recoveries, {cs.get('timeouts', 0)} timeouts)",
    )
    table.add_row(
        "receiver saw",
        f"{ss.get('out_of_order_segments', 0):,} out of order, {ss.get('duplicate_segments', 0):,} duplicates",
    )
    drops: dict[str, int] = {}
    corrupted = 0
    for name, st in result.link_stats.items():
        corrupted += int(st.get("corrupted", 0))
        for reason, n in dict(st.get("dropped", {})).items():
            drops[reason] = drops.get(reason, 0) + int(n)
    table.add_row("network dropped", ", ".join(f"{n} ({r})" for r, n in drops.items() if n) or "nothing")
    if result.encrypted:
        sec = result.security_stats
        sealed = sum(st["sealed"] for st in sec.values())
        refused = sum(st["unauthenticated_dropped"] for st in sec.values())
        replayed = sum(st["replay_dropped"] for st in sec.values())
        table.add_row("network corrupted", f"{corrupted} datagrams (all caught by the AEAD tag and resent)")
        table.add_row("encryption", f"{sealed:,} datagrams sealed; dropped: {refused} failed authentication, "
                      f"{replayed} replays (the network's duplicates)")
    else:
        table.add_row("network corrupted", f"{corrupted} datagrams (all caught by CRC32C and resent)")
        table.add_row("encryption", "[red]none (--insecure)[/]")
    table.add_row("smoothed RTT", f"{result.srtt * 1000:.1f} ms" if result.srtt else "n/a")
    table.add_row(
        "close",
        "clean four-way close on both sides"
        if result.client_closed_cleanly and result.server_closed_cleanly
        else f"client: {result.client_error!r}, server: {result.server_error!r}",
    )
    Console(stderr=True).print(table)
    if not result.ok:
        raise CLIError("transfer failed: " + ("data mismatch" if not result.intact else "unclean close"))
    return 0


def _option(parse, name: str, text: str):
    """`parse(text)`, or a one-line CLIError naming the option."""
    try:
        return parse(text)
    except ValueError as exc:
        raise CLIError(f"{name}: {exc}") from None
