"""This machine's identity key pair and the files that keep Gannet's secrets.

The identity is an X25519 key pair, made on first use and kept in
`$XDG_CONFIG_HOME/gannet/identity` (default `~/.config/gannet`), readable by
its owner only (0600, in a 0700 directory), as ssh keeps its host keys. A
key is shown as base64 (44 characters, as WireGuard shows its keys) and
named by its fingerprint, `SHA256:` and the unpadded base64 of the SHA-256
of the raw public key, as ssh names keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .noise import public_bytes

KEY_SIZE = 32
IDENTITY_FILE = "identity"


class KeyFormatError(ValueError):
    """A key, fingerprint or key file that cannot be read. The message says why."""


def config_dir(environ: dict[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/gannet`, or `~/.config/gannet` (XDG base directory spec)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path(env.get("HOME") or Path.home()) / ".config"
    return root / "gannet"


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """A 32-byte public key from its base64 form."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"not a base64 key: {text.strip()[:60]!r}") from None
    if len(raw) != KEY_SIZE:
        raise KeyFormatError(f"a key is {KEY_SIZE} bytes, this one {len(raw)}")
    return raw


FINGERPRINT_PREFIX = "SHA256:"


def fingerprint(key: bytes) -> str:
    """`SHA256:...`, as ssh-keygen -l shows a key."""
    digest = hashlib.sha256(key).digest()
    return FINGERPRINT_PREFIX + base64.b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class PeerKey:
    """A server pin as the user gives it (`--peer-key`, `Config.peer_key`):
    the key itself, or its fingerprint (the SHA-256 of the key); exactly one
    of `key` and `sha256` is set, each 32 bytes."""

    key: bytes | None = None
    sha256: bytes | None = None


def decode_peer_key(text: str) -> PeerKey:
    """Either form `gannet id` prints: the key (base64, 44 characters) or
    its fingerprint (`SHA256:` and 43 base64 characters, as ssh shows it).
    KeyFormatError, saying which forms are taken, for anything else."""
    text = text.strip()
    if text[: len(FINGERPRINT_PREFIX)].upper() == FINGERPRINT_PREFIX:
        body = text[len(FINGERPRINT_PREFIX):]
        try:
            digest = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        except (binascii.Error, ValueError):
            digest = b""
        if len(digest) != hashlib.sha256().digest_size:
            raise KeyFormatError(f"not a fingerprint: {text[:60]!r} (a fingerprint is SHA256: and "
                                 "43 base64 characters, as `gannet id` prints it)")
        return PeerKey(sha256=digest)
    try:
        return PeerKey(key=decode_key(text))
    except KeyFormatError:
        raise KeyFormatError(f"not a key or a fingerprint: {text[:60]!r} (expected the key, 44 base64 "
                             "characters, or its fingerprint, SHA256:..., as `gannet id` prints "
                             "them)") from None


def write_secret_file(path: Path, data: bytes) -> None:
    """Write `data` to a new file only its owner can read, in a directory only
    its owner can enter; never over an existing file (O_EXCL)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_identity(directory: Path | None = None, *, create: bool = True) -> X25519PrivateKey:
    """This machine's identity key, made (and saved) on first use."""
    path = (directory or config_dir()) / IDENTITY_FILE
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        if not create:
            raise
        key = X25519PrivateKey.generate()
        try:
            write_secret_file(path, (encode_key(key.private_bytes_raw()) + "\n").encode("ascii"))
        except FileExistsError:  # another process made it first: use theirs
            return load_identity(directory, create=False)
        return key
    except UnicodeDecodeError:
        raise KeyFormatError(f"{path}: not a Gannet identity file") from None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFormatError(f"{path}: readable by others (mode {mode:o}); run chmod 600 on it")
    try:
        raw = decode_key(text)
    except KeyFormatError as exc:
        raise KeyFormatError(f"{path}: {exc}") from None
    return X25519PrivateKey.from_private_bytes(raw)


def public_key(key: X25519PrivateKey) -> bytes:
    return public_bytes(key)
