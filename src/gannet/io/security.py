"""The security settings of an endpoint, from its Config and the user's
files: the identity key (made on first use), the pinned keys (known_hosts,
trust on first use), a PSK file, a code. The core's SecureEndpoint never
reads a file; this does, once per endpoint."""

from __future__ import annotations

import functools
import logging
import random

from ..config import Config
from ..crypto.code import normalize_code
from ..crypto.endpoint import InsecureEndpoint, SecureEndpoint, Security
from ..crypto.handshake import HandshakeError
from ..crypto.protection import cpu_has_aes

log = logging.getLogger("gannet.security")


@functools.cache
def has_aes() -> bool:
    """This CPU has AES instructions (/proc/cpuinfo), for the AEAD choice."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return cpu_has_aes(f.read())
    except OSError:  # not Linux: ChaCha20-Poly1305, safe without AES instructions
        return False


@functools.cache
def _identity(directory: str | None):
    from pathlib import Path

    from ..crypto.identity import load_identity

    return load_identity(Path(directory) if directory else None)


def _trust_on_first_use(addr: object, key: bytes, server_name: str | None = None) -> None:
    """The known_hosts check of a server reached at `addr` (a socket
    address), which the user called `server_name` (the host as typed, None:
    by its address): pins are kept under both, as ssh keeps them."""
    if not isinstance(addr, tuple) or len(addr) < 2:
        return
    # (imported here: a client reads known_hosts when the SYN-ACK brings the
    # server's key, and has no use for the module on its way to the SYN)
    from ..crypto.identity import KeyFormatError, fingerprint
    from ..crypto.known_hosts import KeyChangedError, KnownHosts, host_name

    address = host_name(str(addr[0]), int(addr[1]))
    name = host_name(server_name, int(addr[1])) if server_name else address
    try:
        known = KnownHosts().check(name, key, address)
    except KeyChangedError as exc:
        raise HandshakeError(str(exc), "key-changed") from None
    except (KeyFormatError, OSError) as exc:  # a damaged or unwritable known_hosts: refuse, say why
        raise HandshakeError(f"cannot check the server's key against known_hosts: {exc}",
                             "known-hosts") from None
    if not known:
        # As ssh says "Permanently added ... to the list of known hosts".
        shown = name if name == address else f"{name} ({address})"
        log.warning("pinned the key of %s on first use: %s", shown, fingerprint(key))


def security_for(config: Config) -> Security:
    """The Security of an endpoint with `config`. Raises ValueError (with the
    file named) for an unreadable key or PSK file, or a bad code or key."""
    if config.insecure:
        return Security(insecure=True, has_aes=has_aes())
    # The key files' modules (and pathlib) are imported only for the
    # settings that use them: an endpoint with a code reads no file.
    psk = pin = None
    if config.psk_file:
        from pathlib import Path

        from ..crypto.psk import load_psk

        psk = load_psk(Path(config.psk_file))
    code = normalize_code(config.code) if config.code else None
    if config.peer_key:
        from ..crypto.identity import decode_peer_key

        pin = decode_peer_key(config.peer_key)
    static = _identity(None) if psk is None and code is None else None
    return Security(static=static, psk=psk, code=code,
                    server_key=pin.key if pin else None, server_key_sha256=pin.sha256 if pin else None,
                    verify_server=None if pin or psk or code else _trust_on_first_use,
                    has_aes=has_aes())


_warned_tcp_wire = False


def check_tcp_wire(config: Config) -> None:
    """The TCP wire speaks RFC 9293 TCP to kernel peers and carries no
    encryption (docs/tcp.md). A code, PSK or pinned key asked for there
    would be silently ignored, so it is refused (ValueError); a Config that
    did not say `insecure=True` is logged once per process as running in
    clear."""
    global _warned_tcp_wire
    if config.code or config.psk_file or config.peer_key:
        raise ValueError("wire='tcp' is plain TCP and carries no encryption: code, psk_file and "
                         "peer_key need the UDP wire")
    if not config.insecure and not _warned_tcp_wire:
        _warned_tcp_wire = True
        log.warning("wire='tcp': plain TCP, no encryption and no authentication (pass "
                    "insecure=True to say so)")


def make_endpoint(config: Config, rng: random.Random, observed: bool = False) -> SecureEndpoint:
    """The core endpoint for `config`: an InsecureEndpoint for `insecure`,
    else a SecureEndpoint; `observed`: of a class whose instances take an
    observer's wrappers (gannet.observe.trace.observable)."""
    security = security_for(config)
    cls: type[SecureEndpoint] = InsecureEndpoint if security.insecure else SecureEndpoint
    if observed:
        from ..observe.trace import observable

        cls = observable(cls)
    return cls(config, rng, security=security)
