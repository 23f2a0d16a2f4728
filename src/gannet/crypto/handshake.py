"""Gannet's authenticated key exchange, sans-I/O: three messages that ride on
the SYN, the SYN-ACK and the handshake's ACK, so that encryption adds no
round trip.

    SYN      client hello: version, mode, AES flag (the Noise prologue),
             [SPAKE2 message A], Noise NX message 1 (-> e)
    SYN-ACK  [SPAKE2 message B], Noise message 2
             (<- e, ee, s, es[, psk]; payload: the server's AES flag,
             and its stateless reset token if it has one)
    ACK      finished: a MAC over the transcript under the client's key,
             or a one-byte "failed" when message 2 did not verify

Three modes say who the server is:

- IDENTITY: the server's static key, which the client checks against a
  pinned key or pins on first use (gannet.crypto.known_hosts). Noise NX.
- PSK: a 32-byte key both sides were given (`--psk-file`), mixed in as
  Noise's psk2 modifier: NXpsk2. Whoever lacks it cannot finish.
- CODE: a short code both people typed; SPAKE2 turns it into a 32-byte key
  (an attacker gets one online guess per handshake, nothing to attack
  offline), used as the PSK of NXpsk2. The SPAKE2 messages travel in clear
  beside the Noise messages and are hashed into the transcript.

The server learns the client's mode from the hello and refuses a mismatch
with a message that says what to do. The client detects a wrong code, a
wrong PSK or a substituted server key on message 2; the server on message 3.

Secrets come from the OS (through `cryptography` and `spake2`); nothing
here reads a clock or a socket.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import spake
from .noise import DHLEN, PSKLEN, HandshakeState, NoiseError, hkdf, public_bytes
from .protection import choose_aead

PROTOCOL_VERSION = 1
_HELLO = struct.Struct("!BBB")  # version, mode, flags
FLAG_AES = 0x01
SPAKE2_MESSAGE_SIZE = spake.MESSAGE_SIZE
FINISHED = 0
FAILED = 1
MAC_SIZE = 16
RESET_TOKEN_SIZE = 16  # gannet.wire.protected.RESET_TOKEN_SIZE


class Mode(IntEnum):
    IDENTITY = 0
    PSK = 1
    CODE = 2


MODE_NAMES = {Mode.IDENTITY: "a server key", Mode.PSK: "a pre-shared key (--psk-file)",
              Mode.CODE: "a code (--code)"}


class HandshakeError(Exception):
    """The key exchange failed. `str()` is one line for the user; `reason`
    is a short name for counting ("wrong-secret", "key-changed",
    "mode-mismatch", "malformed", "peer-failed", "local": this side could
    not finish its own part)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class HandshakeResult:
    """What both sides know once the exchange verified."""

    aead: str
    send_secret: bytes
    recv_secret: bytes
    handshake_hash: bytes
    server_key: bytes  # the server's static public key (32 bytes)
    mode: Mode
    # The server's stateless reset token for its connection ID (a client's
    # result; empty when the server gave none): docs/security.md.
    reset_token: bytes = b""


def _psk_from_spake(spake_key: bytes) -> bytes:
    return hkdf(spake_key, b"gannet spake2 psk", 1)[0]


def _finished_mac(hs: HandshakeState) -> bytes:
    key = hkdf(hs.symmetric.ck, b"gannet client finished", 1)[0]
    return hmac.digest(key, hs.handshake_hash, "sha256")[:MAC_SIZE]


def _wrong_secret_message(mode: Mode, side: str) -> str:
    if mode is Mode.CODE:
        return "wrong code: the codes typed on the two sides differ (or someone tried to guess it)"
    if mode is Mode.PSK:
        return "wrong pre-shared key: the two sides' --psk-file keys differ"
    return f"the {side} failed to verify the key exchange (tampered with on the path?)"


class ClientHandshake:
    """The initiator. `psk` for PSK mode, `code` for CODE mode, neither for
    IDENTITY; `expected_server_key` (32 bytes) pins the server's key, or
    `expected_server_key_sha256` its SHA-256 (what a fingerprint names: as
    strong a pin, SHA-256 being preimage resistant); else `server_key` in
    the result is for the caller to check or pin."""

    def __init__(self, *, psk: bytes | None = None, code: str | None = None,
                 expected_server_key: bytes | None = None,
                 expected_server_key_sha256: bytes | None = None, has_aes: bool = True,
                 context: bytes = b"") -> None:
        if psk is not None and code is not None:
            raise ValueError("a PSK and a code cannot both be used")
        if psk is not None and len(psk) != PSKLEN:
            raise ValueError(f"a PSK is {PSKLEN} bytes")
        self.mode = Mode.CODE if code is not None else Mode.PSK if psk is not None else Mode.IDENTITY
        self.has_aes = has_aes
        self.expected_server_key = expected_server_key
        self.expected_server_key_sha256 = expected_server_key_sha256
        self._hello = _HELLO.pack(PROTOCOL_VERSION, self.mode, FLAG_AES if has_aes else 0)
        self._hs = HandshakeState(True, prologue=b"gannet" + context + self._hello,
                                  psk_mode=self.mode is not Mode.IDENTITY)
        if psk is not None:
            self._hs.set_psk(psk)
        self._spake = None
        if code is not None:
            # (spake2's SPAKE2_A, or the same computed by a process started
            # ahead for this code: gannet.crypto.spake)
            self._spake = spake.client_exchange(code)
        self.result: HandshakeResult | None = None

    def hello(self) -> bytes:
        """Message 1, for the SYN (the same bytes on every retransmission)."""
        if self._hs.message == 0:
            out = self._hello
            if self._spake is not None:
                spake_msg = self._spake.start()
                self._hs.mix_clear(spake_msg)
                out += spake_msg
            self._msg1 = out + self._hs.write_message(b"")
        return self._msg1

    def receive_reply(self, message: bytes | bytearray | memoryview) -> bytes:
        """Read message 2 (from the SYN-ACK); return message 3 for the ACK.
        Raises HandshakeError: the caller then sends `failed()` and ends."""
        if self._hs.message != 1:
            raise ValueError("receive_reply before hello or twice")
        data = bytes(message)
        if self._spake is not None:
            if len(data) < SPAKE2_MESSAGE_SIZE:
                raise HandshakeError("malformed key exchange reply", "malformed")
            spake_msg, data = data[:SPAKE2_MESSAGE_SIZE], data[SPAKE2_MESSAGE_SIZE:]
            try:
                spake_key = self._spake.finish(spake_msg)
            except spake.ExchangeLost as exc:
                raise HandshakeError(f"cannot finish the code exchange: {exc}", "local") from None
            except Exception:  # spake2 raises its own errors for bad points
                raise HandshakeError("malformed code exchange from the server", "malformed") from None
            self._hs.mix_clear(spake_msg)
            self._hs.set_psk(_psk_from_spake(spake_key))
        try:
            payload = self._hs.read_message(data)
        except NoiseError:
            raise HandshakeError(_wrong_secret_message(self.mode, "client"), "wrong-secret") from None
        server_key = self._hs.rs
        assert server_key is not None
        if self.expected_server_key is not None and not hmac.compare_digest(server_key, self.expected_server_key):
            raise HandshakeError("the server's key is not the pinned one", "key-changed")
        if self.expected_server_key_sha256 is not None and not hmac.compare_digest(
                hashlib.sha256(server_key).digest(), self.expected_server_key_sha256):
            raise HandshakeError("the server's key is not the pinned one (its fingerprint differs)",
                                 "key-changed")
        if len(payload) not in (1, 1 + RESET_TOKEN_SIZE):
            raise HandshakeError("malformed key exchange reply", "malformed")
        c2s, s2c = self._hs.split()
        self.result = HandshakeResult(choose_aead(self.has_aes, bool(payload[0] & FLAG_AES)), c2s, s2c,
                                      self._hs.handshake_hash, server_key, self.mode, payload[1:])
        return bytes((FINISHED,)) + _finished_mac(self._hs)

    @staticmethod
    def failed() -> bytes:
        """Message 3 after a failure: tells the server to stop waiting."""
        return bytes((FAILED,))


class ServerHandshake:
    """The responder. `static` is the server identity; `psk` and `code` say
    which modes it accepts: with either, only that mode (a server that has
    a PSK or a code does not serve clients that have neither)."""

    def __init__(self, static: X25519PrivateKey, *, psk: bytes | None = None, code: str | None = None,
                 has_aes: bool = True, context: bytes = b"",
                 started: tuple[Any, bytes] | None = None) -> None:
        """`started`: this server's half of the code exchange, from
        `start_code_exchange(code)` (made before the hello came); used for
        this hello only. Without it, it is started when the hello comes."""
        if psk is not None and code is not None:
            raise ValueError("a PSK and a code cannot both be used")
        if started is not None and code is None:
            raise ValueError("a started code exchange needs the code")
        self.mode = Mode.CODE if code is not None else Mode.PSK if psk is not None else Mode.IDENTITY
        self._static = static
        self._psk = psk
        self._code = code
        self.has_aes = has_aes
        self._context = context
        self._started = started
        self._hs: HandshakeState | None = None
        self._reply: bytes | None = None
        self.result: HandshakeResult | None = None

    def receive_hello(self, message: bytes | bytearray | memoryview, reset_token: bytes = b"") -> bytes:
        """Read message 1 (from a SYN); return message 2 for the SYN-ACK,
        whose encrypted payload carries `reset_token` (the stateless reset
        token of the connection ID this side takes, or nothing). The keys
        are ready at once (`result`), so the server may send protected data
        after its SYN-ACK; `receive_finished` then confirms the client had
        the same secret."""
        if len(reset_token) not in (0, RESET_TOKEN_SIZE):
            raise ValueError(f"a reset token is {RESET_TOKEN_SIZE} bytes")
        data = bytes(message)
        if len(data) < _HELLO.size + DHLEN:
            raise HandshakeError("malformed key exchange hello", "malformed")
        version, mode, flags = _HELLO.unpack_from(data)
        if version != PROTOCOL_VERSION:
            raise HandshakeError(f"unsupported key exchange version {version}", "malformed")
        if mode not in Mode.__members__.values():
            raise HandshakeError(f"unknown key exchange mode {mode}", "malformed")
        mode = Mode(mode)
        if mode is not self.mode:
            raise HandshakeError(f"the client uses {MODE_NAMES[mode]} but this server needs "
                                 f"{MODE_NAMES[self.mode]}", "mode-mismatch")
        hello, rest = data[: _HELLO.size], data[_HELLO.size :]
        hs = HandshakeState(False, prologue=b"gannet" + self._context + hello, s=self._static,
                            psk_mode=mode is not Mode.IDENTITY)
        spake_reply = b""
        if mode is Mode.CODE:
            if len(rest) < SPAKE2_MESSAGE_SIZE + DHLEN:
                raise HandshakeError("malformed key exchange hello", "malformed")
            spake_msg, rest = rest[:SPAKE2_MESSAGE_SIZE], rest[SPAKE2_MESSAGE_SIZE:]
            assert self._code is not None
            started, self._started = self._started, None  # (one hello per start)
            exchange, spake_reply = started or start_code_exchange(self._code)
            try:
                spake_key = exchange.finish(spake_msg)
            except Exception:
                raise HandshakeError("malformed code exchange from the client", "malformed") from None
            hs.mix_clear(spake_msg)  # where the client mixed it: before message 1
            hs.set_psk(_psk_from_spake(spake_key))
        elif mode is Mode.PSK:
            assert self._psk is not None
            hs.set_psk(self._psk)
        try:
            payload = hs.read_message(rest)
        except NoiseError:
            raise HandshakeError("malformed key exchange hello", "malformed") from None
        if payload:
            raise HandshakeError("malformed key exchange hello", "malformed")
        if spake_reply:
            hs.mix_clear(spake_reply)  # and the reply where the client reads it: before message 2
        self._hs = hs
        self._reply = spake_reply + hs.write_message(bytes((FLAG_AES if self.has_aes else 0,)) + reset_token)
        c2s, s2c = hs.split()
        self.result = HandshakeResult(choose_aead(self.has_aes, bool(flags & FLAG_AES)), s2c, c2s,
                                      hs.handshake_hash, public_bytes(self._static), mode)
        return self._reply

    @property
    def reply(self) -> bytes | None:
        """Message 2 again, for a retransmitted SYN-ACK."""
        return self._reply

    def receive_finished(self, message: bytes | bytearray | memoryview) -> None:
        """Check message 3. Raises HandshakeError when the client had
        another secret (a wrong code or PSK) or reported a failure."""
        if self._hs is None or self.result is None:
            raise ValueError("receive_finished before receive_hello")
        data = bytes(message)
        if data[:1] == bytes((FAILED,)) and len(data) == 1:
            raise HandshakeError(_peer_failed_message(self.mode), "peer-failed")
        if len(data) != 1 + MAC_SIZE or data[0] != FINISHED:
            raise HandshakeError("malformed key exchange finish", "malformed")
        if not hmac.compare_digest(data[1:], _finished_mac(self._hs)):
            raise HandshakeError(_wrong_secret_message(self.mode, "server"), "wrong-secret")


def start_code_exchange(code: str) -> tuple[Any, bytes]:
    """The server's half of SPAKE2 started: (its state, its message). The
    message depends on the code and a fresh random scalar, not on the
    client's message, so a listener starts the next one while it waits and
    answers a hello without this work (a few milliseconds of pure-Python
    curve arithmetic, and the import of spake2 for the first). Each one is
    for one hello: the spake2 state refuses a second finish."""
    exchange = spake.server_exchange(code)
    return exchange, exchange.start()


def _peer_failed_message(mode: Mode) -> str:
    if mode is Mode.CODE:
        return "wrong code: the client's code does not match this one"
    if mode is Mode.PSK:
        return "wrong pre-shared key: the client's --psk-file key differs"
    return "the client refused this server's key (a pinned key differs, see `gannet trust`)"
