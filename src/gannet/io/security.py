"""The security settings of an endpoint, from its Config and the user's
files: the identity key (made on first use), the pinned keys (known_hosts,
trust on first use), a PSK file, a code. The core's SecureEndpoint never
reads a file; this does, once per endpoint."""

from __future__ import annotations

import functools
import logging
import random
from pathlib import Path

from ..config import Config
from ..crypto.code import normalize_code
from ..crypto.endpoint import SecureEndpoint, Security
from ..crypto.handshake import HandshakeError
from ..crypto.identity import decode_key, fingerprint, load_identity
from ..crypto.known_hosts import KeyChangedError, KnownHosts, host_name
from ..crypto.protection import cpu_has_aes
from ..crypto.psk import load_psk

log = logging.getLogger("gannet.security")


@functools.cache
def _has_aes() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return cpu_has_aes(f.read())
    except OSError:  # not Linux: ChaCha20-Poly1305, safe without AES instructions
        return False


@functools.cache
def _identity(directory: str | None):
    return load_identity(Path(directory) if directory else None)


def _trust_on_first_use(addr: object, key: bytes) -> None:
    if not isinstance(addr, tuple) or len(addr) < 2:
        return
    name = host_name(str(addr[0]), int(addr[1]))
    try:
        known = KnownHosts().check(name, key)
    except KeyChangedError as exc:
        raise HandshakeError(str(exc), "key-changed") from None
    if not known:
        # As ssh says "Permanently added ... to the list of known hosts".
        log.warning("pinned the key of %s on first use: %s", name, fingerprint(key))


def security_for(config: Config) -> Security:
    """The Security of an endpoint with `config`. Raises ValueError (with the
    file named) for an unreadable key or PSK file, or a bad code or key."""
    if config.insecure:
        return Security(insecure=True, has_aes=_has_aes())
    psk = load_psk(Path(config.psk_file)) if config.psk_file else None
    code = normalize_code(config.code) if config.code else None
    server_key = decode_key(config.peer_key) if config.peer_key else None
    static = _identity(None) if psk is None and code is None else None
    return Security(static=static, psk=psk, code=code, server_key=server_key,
                    verify_server=None if server_key or psk or code else _trust_on_first_use,
                    has_aes=_has_aes())


def make_endpoint(config: Config, rng: random.Random) -> SecureEndpoint:
    return SecureEndpoint(config, rng, security=security_for(config))
