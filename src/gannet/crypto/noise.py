"""The Noise Protocol Framework's symmetric and handshake state (revision 34),
for the two patterns Gannet uses, sans-I/O.

    NX:      -> e
             <- e, ee, s, es
    NXpsk2:  -> e
             <- e, ee, s, es, psk

Names follow the specification (section 5: CipherState, SymmetricState,
HandshakeState; MixKey, MixHash, MixKeyAndHash, EncryptAndHash, Split).
The handshake AEAD is ChaCha20-Poly1305 and the hash SHA-256, so the
protocol names are `Noise_NX_25519_ChaChaPoly_SHA256` and
`Noise_NXpsk2_25519_ChaChaPoly_SHA256`; the AEAD of the traffic that follows
is chosen separately (gannet.crypto.protection).

Key material (the ephemeral and static X25519 keys) comes from the OS
through `cryptography`: the one source of randomness that is not a seeded
`random.Random` passed in, because a key must not be predictable.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

DHLEN = 32
HASHLEN = 32
TAGLEN = 16
PSKLEN = 32
MAX_NONCE = (1 << 64) - 1  # reserved by the specification (section 5.1)


class NoiseError(ValueError):
    """A handshake message that does not verify or parse: the peer (or
    someone on the path) is not who the transcript says."""


def public_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return pub.public_bytes_raw()  # (not public_bytes(Encoding.Raw, ...): no serialization import)


def dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """DH(key_pair, public_key) (section 4.1). An all-zero result (a low-order
    point sent by an attacker) is refused by `cryptography` itself."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:
        raise NoiseError(f"bad public key: {exc}") from None


def hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    """HKDF(chaining_key, input_key_material, num_outputs) (section 4.3):
    RFC 5869 with the chaining key as salt and an empty info."""
    temp_key = hmac.digest(chaining_key, ikm, "sha256")
    out, prev = [], b""
    for i in range(1, outputs + 1):
        prev = hmac.digest(temp_key, prev + bytes((i,)), "sha256")
        out.append(prev)
    return tuple(out)


def _nonce(n: int) -> bytes:
    # ChaChaPoly: 32 bits of zeros followed by the little-endian 64-bit n.
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


class CipherState:
    """k and n (section 5.1); k is None until the first MixKey."""

    __slots__ = ("k", "n", "_aead")

    def __init__(self) -> None:
        self.k: bytes | None = None
        self.n = 0
        self._aead: ChaCha20Poly1305 | None = None

    def initialize_key(self, key: bytes) -> None:
        self.k, self.n = key, 0
        self._aead = ChaCha20Poly1305(key)

    def has_key(self) -> bool:
        return self.k is not None

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        if self.n >= MAX_NONCE:
            raise NoiseError("nonce exhausted")
        out = self._aead.encrypt(_nonce(self.n), plaintext, ad)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return ciphertext
        if self.n >= MAX_NONCE:
            raise NoiseError("nonce exhausted")
        try:
            out = self._aead.decrypt(_nonce(self.n), ciphertext, ad)
        except InvalidTag:
            raise NoiseError("handshake message does not authenticate") from None
        self.n += 1
        return out


class SymmetricState:
    """ck, h and a CipherState (section 5.2)."""

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASHLEN:
            self.h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            self.h = hashlib.sha256(protocol_name).digest()
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = hkdf(self.ck, ikm, 2)
        self.cipher.initialize_key(temp_k)

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher.initialize_key(temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """The two traffic secrets: initiator-to-responder first. Gannet
        derives its per-direction AEAD keys and IVs from them
        (gannet.crypto.protection), not Noise's transport CipherStates,
        because its nonce is the packet number carried in the header."""
        k1, k2 = hkdf(self.ck, b"", 2)
        return k1, k2


class HandshakeState:
    """The NX / NXpsk2 handshake (section 5.3) for one side.

    `initiator` writes message 1 and reads message 2; the responder the
    reverse. `s` is the responder's static key pair (the initiator has
    none); `psk` (32 bytes) selects NXpsk2, and may be given late through
    `set_psk` (the PAKE case: the PSK is known only once message 1 arrived
    or message 2's clear part was read). `prologue` binds the context both
    sides must agree on.
    """

    def __init__(self, initiator: bool, *, prologue: bytes = b"", s: X25519PrivateKey | None = None,
                 psk_mode: bool = False, e: X25519PrivateKey | None = None) -> None:
        if not initiator and s is None:
            raise ValueError("the responder of NX needs a static key pair")
        name = b"Noise_NXpsk2_25519_ChaChaPoly_SHA256" if psk_mode else b"Noise_NX_25519_ChaChaPoly_SHA256"
        self.initiator = initiator
        self.psk_mode = psk_mode
        self.psk: bytes | None = None
        self.symmetric = SymmetricState(name)
        self.symmetric.mix_hash(prologue)
        self.s = s
        self.e = e  # tests may fix it; otherwise made when its token is written
        self.re: bytes | None = None
        self.rs: bytes | None = None
        self.message = 0  # messages processed so far

    def set_psk(self, psk: bytes) -> None:
        if not self.psk_mode:
            raise ValueError("set_psk on a handshake without the psk modifier")
        if len(psk) != PSKLEN:
            raise ValueError(f"a PSK is {PSKLEN} bytes, not {len(psk)}")
        self.psk = psk

    def mix_clear(self, data: bytes) -> None:
        """Bind bytes sent in clear beside a message (a PAKE message) into the
        transcript: both sides call it at the same point."""
        self.symmetric.mix_hash(data)

    def _write_e(self) -> bytes:
        if self.e is None:
            self.e = X25519PrivateKey.generate()
        pub = public_bytes(self.e)
        self.symmetric.mix_hash(pub)
        if self.psk_mode:  # section 9.2: e also mixes into the key with a PSK
            self.symmetric.mix_key(pub)
        return pub

    def _read_e(self, data: memoryview) -> None:
        if len(data) < DHLEN:
            raise NoiseError("handshake message too short for an ephemeral key")
        self.re = bytes(data[:DHLEN])
        self.symmetric.mix_hash(self.re)
        if self.psk_mode:
            self.symmetric.mix_key(self.re)

    def _mix_psk(self) -> None:
        if self.psk is None:
            raise ValueError("the psk token needs set_psk first")
        self.symmetric.mix_key_and_hash(self.psk)

    def write_message(self, payload: bytes = b"") -> bytes:
        sym = self.symmetric
        if self.initiator and self.message == 0:  # -> e
            out = self._write_e() + sym.encrypt_and_hash(payload)
        elif not self.initiator and self.message == 1:  # <- e, ee, s, es[, psk]
            assert self.re is not None and self.s is not None
            out = self._write_e()
            assert self.e is not None
            sym.mix_key(dh(self.e, self.re))  # ee
            out += sym.encrypt_and_hash(public_bytes(self.s))  # s
            sym.mix_key(dh(self.s, self.re))  # es: responder's static with initiator's ephemeral
            if self.psk_mode:
                self._mix_psk()
            out += sym.encrypt_and_hash(payload)
        else:
            raise ValueError("write_message out of turn")
        self.message += 1
        return out

    def read_message(self, message: bytes | bytearray | memoryview) -> bytes:
        sym = self.symmetric
        data = memoryview(message)
        if not self.initiator and self.message == 0:  # -> e
            self._read_e(data)
            payload = sym.decrypt_and_hash(bytes(data[DHLEN:]))
        elif self.initiator and self.message == 1:  # <- e, ee, s, es[, psk]
            assert self.e is not None
            self._read_e(data)
            assert self.re is not None
            sym.mix_key(dh(self.e, self.re))  # ee
            s_len = DHLEN + TAGLEN
            if len(data) < DHLEN + s_len + TAGLEN:
                raise NoiseError("handshake message too short for a static key")
            self.rs = sym.decrypt_and_hash(bytes(data[DHLEN : DHLEN + s_len]))
            sym.mix_key(dh(self.e, self.rs))  # es
            if self.psk_mode:
                self._mix_psk()
            payload = sym.decrypt_and_hash(bytes(data[DHLEN + s_len :]))
        else:
            raise ValueError("read_message out of turn")
        self.message += 1
        return payload

    @property
    def finished(self) -> bool:
        return self.message == 2

    @property
    def handshake_hash(self) -> bytes:
        """h after the last message: names this session (channel binding)."""
        return self.symmetric.h

    def split(self) -> tuple[bytes, bytes]:
        if not self.finished:
            raise ValueError("split before the handshake finished")
        return self.symmetric.split()
