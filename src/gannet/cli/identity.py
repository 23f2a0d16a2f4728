"""`gannet id` and `gannet trust`: this machine's identity and the server keys
it has pinned (docs/security.md).

`gannet id` prints the identity key (made on first use) and its
fingerprint, which a server's owner reads out to the people who connect, as
ssh users compare host key fingerprints; `--new-psk FILE` makes a
pre-shared key file for `--psk-file`. `gannet trust` lists the pinned keys,
`trust add NAME KEY` pins one by hand (what `--peer-key` does for one
connection), `trust remove NAME` forgets one, after a server's key was
changed on purpose.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gannet.cli.main import CLIError, summary

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing)
if TYPE_CHECKING:
    from gannet.crypto.known_hosts import KnownHosts

# (Each command imports the key and known_hosts code it runs: building the
# parser, for --help or a usage error, loads no cryptography.)


def register(subparsers: argparse._SubParsersAction) -> None:
    i = subparsers.add_parser(
        "id",
        help=summary("id"),
        description="Show this machine's identity public key and its fingerprint (the key pair "
        "is made on first use and kept, readable only by you, in $XDG_CONFIG_HOME/gannet).",
    )
    i.add_argument("--new-psk", metavar="FILE", type=Path,
                   help="instead, write a new pre-shared key to FILE (mode 0600) for --psk-file")
    i.set_defaults(func=run_id)

    t = subparsers.add_parser(
        "trust",
        help=summary("trust"),
        description="Server keys pinned on first use or by hand, like ssh's known_hosts.",
    )
    tsub = t.add_subparsers(dest="action", metavar="ACTION")
    tl = tsub.add_parser("list", help="list pinned keys (the default)",
                         description="List pinned server keys: name, fingerprint, key.")
    tl.set_defaults(func=run_list)
    ta = tsub.add_parser("add", help="pin a server's key", description="Pin KEY for the server NAME.")
    ta.add_argument("name", metavar="NAME", help="HOST:PORT as you pass it to the commands")
    ta.add_argument("key", metavar="KEY", help="the server's key as `gannet id` prints it (base64)")
    ta.add_argument("--replace", action="store_true", help="replace a different pinned key")
    ta.set_defaults(func=run_add)
    tr = tsub.add_parser("remove", help="forget a pinned key",
                         description="Forget the key pinned for NAME (after its owner changed it), "
                         "under all the names and addresses it was pinned as.")
    tr.add_argument("name", metavar="NAME")
    tr.set_defaults(func=run_remove)
    t.set_defaults(func=run_list)


def _escape(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")


def run_id(args: argparse.Namespace) -> int:
    from gannet.crypto.identity import (
        IDENTITY_FILE, KeyFormatError, config_dir, encode_key, fingerprint, load_identity, public_key,
    )
    from gannet.crypto.psk import generate_psk_file

    if args.new_psk is not None:
        try:
            generate_psk_file(args.new_psk)
        except FileExistsError:
            raise CLIError(f"{args.new_psk} exists; not replacing it") from None
        print(f"gannet id: wrote a new pre-shared key to {args.new_psk}; copy it to the peer "
              "over a channel you trust, and pass --psk-file on both sides", file=sys.stderr)
        return 0
    directory = config_dir()
    existed = (directory / IDENTITY_FILE).exists()
    try:
        key = load_identity(directory)
    except KeyFormatError as exc:
        raise CLIError(str(exc)) from None
    if not existed:
        print(f"gannet id: made a new identity in {directory / IDENTITY_FILE}", file=sys.stderr)
    pub = public_key(key)
    print(f"key: {encode_key(pub)}")
    print(f"fingerprint: {fingerprint(pub)}")
    return 0


def _known() -> KnownHosts:
    from gannet.crypto.known_hosts import KnownHosts

    return KnownHosts()


def run_list(args: argparse.Namespace) -> int:
    from gannet.crypto.identity import KeyFormatError, encode_key, fingerprint

    kh = _known()
    try:
        pins = kh.entries()
    except KeyFormatError as exc:
        raise CLIError(str(exc)) from None
    if not pins:
        print(f"gannet trust: no pinned keys ({kh.path})", file=sys.stderr)
    for pin in pins:
        print(f"{_escape(','.join(pin.names))} {fingerprint(pin.key)} {encode_key(pin.key)}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    from gannet.crypto.identity import FINGERPRINT_PREFIX, KeyFormatError, decode_key, fingerprint
    from gannet.crypto.known_hosts import KeyChangedError

    if args.key.strip().upper().startswith(FINGERPRINT_PREFIX):
        raise CLIError("trust add needs the key itself (the `key:` line of `gannet id`); a "
                       "fingerprint can check a key but not be pinned here: pass it as --peer-key")
    try:
        key = decode_key(args.key)
        _known().add(args.name, key, replace=args.replace)
    except KeyChangedError as exc:
        raise CLIError(f"{_escape(args.name)} already has another key pinned "
                       f"({fingerprint(exc.pinned)}); pass --replace to replace it") from None
    except (KeyFormatError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    print(f"gannet trust: pinned {_escape(args.name)} {fingerprint(key)}", file=sys.stderr)
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from gannet.crypto.identity import KeyFormatError

    try:
        removed = _known().remove(args.name)
    except KeyFormatError as exc:
        raise CLIError(str(exc)) from None
    if removed is None:
        raise CLIError(f"no key pinned for {_escape(args.name)}")
    others = [n for n in removed.names if n != args.name]
    also = f" (also pinned as {_escape(', '.join(others))})" if others else ""
    print(f"gannet trust: removed the key pinned for {_escape(args.name)}{also}", file=sys.stderr)
    return 0
