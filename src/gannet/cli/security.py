"""The security options every network command shares (docs/security.md):
`--insecure`, `--psk-file`, `--peer-key` and, for the commands that pair
people, `--code`; turned into Config settings in one place, with the loud
warning `--insecure` deserves and one-line errors for bad values."""

from __future__ import annotations

import argparse
import sys

TYPE_CHECKING = False  # (typing not imported at run time: the parsers stay light)
if TYPE_CHECKING:
    from typing import Any

from gannet.cli.main import CLIError

# (The key and code parsers are imported by `overrides`, when a command runs:
# building a parser, for --help or a usage error, loads no cryptography.)


def add_arguments(p: argparse.ArgumentParser, *, code: str | None = None, peer_key: bool = True) -> None:
    """`code`: the help text of --code for commands that take one."""
    g = p.add_argument_group("security (encrypted and authenticated unless --insecure)")
    g.add_argument("--insecure", action="store_true",
                   help="no encryption and no authentication: anyone on the path reads and changes "
                   "the traffic (for measurements and plaintext peers only)")
    g.add_argument("--psk-file", metavar="FILE",
                   help="a pre-shared key file (`gannet id --new-psk FILE`): only a peer with the "
                   "same key connects")
    if peer_key:
        g.add_argument("--peer-key", metavar="KEY",
                       help="the server's key or its fingerprint (SHA256:...), as `gannet id` prints "
                       "them, pinned for this connection (default: trust on first use, then as "
                       "pinned in known_hosts)")
    if code is not None:
        g.add_argument("--code", metavar="CODE", help=code)


def warn_insecure(tool: str, why: str = "--insecure") -> None:
    print(f"gannet {tool}: WARNING: {why}: no encryption, no authentication; anyone on the "
          "path can read and change this traffic", file=sys.stderr, flush=True)


def plaintext_transport(args: argparse.Namespace, tool: str, option: str) -> None:
    """For a transport that cannot encrypt (`--wire tcp`, `--transport
    tcp`: plain TCP): CLIError if a security option was given (it would be
    ignored), else the loud warning."""
    if any(getattr(args, name, None) for name in ("psk_file", "peer_key", "code")):
        raise CLIError(f"{option} is plain TCP and carries no encryption: --code, --psk-file and "
                       "--peer-key need Gannet over UDP")
    warn_insecure(tool, f"{option} (plain TCP)")


def start_code_exchange(args: argparse.Namespace) -> None:
    """A client command's `ahead` (gannet.cli.main): with a code it will
    use (not refused by `overrides` with --insecure, --psk-file or plain
    TCP), the client's half of the code exchange starts now in a child
    process, while the command loads the rest of its way to the SYN
    (gannet.io.spake_child)."""
    code = getattr(args, "code", None)
    if not code or getattr(args, "insecure", False) or getattr(args, "psk_file", None) \
            or getattr(args, "wire", "udp") != "udp":
        return
    from gannet.crypto.code import normalize_code

    try:
        code = normalize_code(code)
    except ValueError:
        return  # (refused, with why, by `overrides`)
    from gannet.io.spake_child import start_ahead

    start_ahead(code)


def overrides(args: argparse.Namespace, tool: str) -> dict[str, Any]:
    """Config settings from the parsed options; CLIError for a bad value or
    a combination that cannot work."""
    insecure = getattr(args, "insecure", False)
    psk_file = getattr(args, "psk_file", None)
    peer_key = getattr(args, "peer_key", None)
    code = getattr(args, "code", None)
    if getattr(args, "wire", "udp") == "tcp":
        # Plain RFC 9293 TCP, for kernel TCP peers: there is nowhere to carry
        # a key exchange, so it runs in clear, and says so as --insecure does.
        plaintext_transport(args, tool, "--wire tcp")
        return {"insecure": True}
    if insecure:
        if psk_file or peer_key or code:
            raise CLIError("--insecure turns security off: it cannot be used with --code, "
                           "--psk-file or --peer-key")
        warn_insecure(tool)
        return {"insecure": True}
    if psk_file and code:
        raise CLIError("--psk-file and --code cannot both be used")
    out: dict[str, Any] = {}
    if psk_file:
        from pathlib import Path

        from gannet.crypto.identity import KeyFormatError
        from gannet.crypto.psk import load_psk

        try:
            load_psk(Path(psk_file))  # a readable key now, not a failed handshake later
        except FileNotFoundError:
            raise CLIError(f"no such PSK file: {psk_file}") from None
        except KeyFormatError as exc:
            raise CLIError(str(exc)) from None
        out["psk_file"] = psk_file
    if peer_key:
        from gannet.crypto.identity import KeyFormatError, decode_peer_key

        try:
            decode_peer_key(peer_key)
        except KeyFormatError as exc:
            raise CLIError(f"--peer-key: {exc}") from None
        out["peer_key"] = peer_key
    if code:
        from gannet.crypto.code import normalize_code

        try:
            out["code"] = normalize_code(code)
        except ValueError as exc:
            raise CLIError(f"--code: {exc}") from None
    return out
