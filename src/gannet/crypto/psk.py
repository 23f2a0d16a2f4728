"""Pre-shared key files (`--psk-file`): 32 random bytes in base64 on one line,
the format of WireGuard's `wg genpsk`. The key is mixed into the key
exchange as Noise's psk modifier (gannet.crypto.handshake, Mode.PSK)."""

from __future__ import annotations

import os
from pathlib import Path

from .identity import KeyFormatError, decode_key, encode_key, write_secret_file


def generate_psk_file(path: Path) -> bytes:
    """Make a new PSK file (0600, never over an existing file)."""
    psk = os.urandom(32)
    write_secret_file(path, (encode_key(psk) + "\n").encode("ascii"))
    return psk


def load_psk(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise KeyFormatError(f"{path}: not a PSK file (32 bytes in base64)") from None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFormatError(f"{path}: readable by others (mode {mode:o}); run chmod 600 on it")
    try:
        return decode_key(text)
    except KeyFormatError as exc:
        raise KeyFormatError(f"{path}: not a PSK file ({exc})") from None
