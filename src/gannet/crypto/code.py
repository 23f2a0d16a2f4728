"""Short human codes for the PAKE (`gannet receive` / `send --code`, chat),
as magic-wormhole makes them: `7-guitar-october`, a number then words.

A code is a password for SPAKE2 (gannet.crypto.handshake, Mode.CODE): an
attacker who does not know it gets one guess per handshake and nothing to
test offline, so two words of a 2,048-word list (BIP-39's English list,
from the `mnemonic` package) and a number below 100 give about one chance
in 400 million per try, and every failed try is reported on both sides.
"""

from __future__ import annotations

import re

WORDS = 2
NUMBER_RANGE = 100

_CODE = re.compile(r"^[1-9][0-9]*(-[a-z]+)+$")


def wordlist() -> list[str]:
    from mnemonic import Mnemonic

    return Mnemonic("english").wordlist


def generate_code(words: int = WORDS) -> str:
    """A fresh code, from the OS's random source (it is a secret)."""
    # (imported here: `gannet send --code` checks its code before it starts
    # the child of its code exchange, gannet.io.spake_child)
    import secrets

    wl = wordlist()
    number = 1 + secrets.randbelow(NUMBER_RANGE - 1)
    return "-".join([str(number)] + [secrets.choice(wl) for _ in range(words)])


def normalize_code(text: str) -> str:
    """The code as both sides must feed it to SPAKE2: lower case, spaces and
    surrounding blanks as typed by a person turned into the canonical form.
    ValueError for anything that is not a code."""
    code = "-".join(text.strip().lower().split())
    if not _CODE.match(code):
        raise ValueError(f"not a code like 7-guitar-october: {text!r}")
    return code
