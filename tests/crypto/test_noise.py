"""gannet.crypto.noise against an independent implementation of the Noise
specification (the `noiseprotocol` package): each side of NX and NXpsk2
talks to the other's, payloads and transport keys agree, and any altered
byte of a message fails."""

from __future__ import annotations

import os

import noise.connection as noise_ref  # the noiseprotocol package
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from gannet.crypto.noise import HandshakeState, NoiseError, hkdf


def _ref(name: bytes, initiator: bool, prologue: bytes, static: bytes | None, psk: bytes | None):
    conn = noise_ref.NoiseConnection.from_name(name)
    conn.set_as_initiator() if initiator else conn.set_as_responder()
    conn.set_prologue(prologue)
    if static is not None:
        conn.set_keypair_from_private_bytes(noise_ref.Keypair.STATIC, static)
    if psk is not None:
        conn.set_psks(psk=psk)
    conn.start_handshake()
    return conn


def _check_transport(k_send: bytes, ref_conn, ref_is_receiver: bool, k_recv: bytes) -> None:
    # Noise transport messages: key from Split, nonce 0, empty AD.
    nonce0 = bytes(12)
    assert ref_conn.decrypt(ChaCha20Poly1305(k_send).encrypt(nonce0, b"ours", b"")) == b"ours"
    assert ChaCha20Poly1305(k_recv).decrypt(nonce0, ref_conn.encrypt(b"theirs"), b"") == b"theirs"


@pytest.mark.parametrize("psk", [None, os.urandom(32)], ids=["NX", "NXpsk2"])
def test_our_initiator_with_reference_responder(psk):
    name = b"Noise_NXpsk2_25519_ChaChaPoly_SHA256" if psk else b"Noise_NX_25519_ChaChaPoly_SHA256"
    server_static = X25519PrivateKey.generate()
    ref = _ref(name, False, b"ctx", server_static.private_bytes_raw(), psk)
    ours = HandshakeState(True, prologue=b"ctx", psk_mode=psk is not None)
    if psk:
        ours.set_psk(psk)
    assert ref.read_message(ours.write_message(b"hello")) == b"hello"
    assert ours.read_message(ref.write_message(b"world")) == b"world"
    assert ours.rs == server_static.public_key().public_bytes_raw()
    assert ours.handshake_hash == ref.get_handshake_hash()
    k1, k2 = ours.split()
    _check_transport(k1, ref, True, k2)


@pytest.mark.parametrize("psk", [None, os.urandom(32)], ids=["NX", "NXpsk2"])
def test_reference_initiator_with_our_responder(psk):
    name = b"Noise_NXpsk2_25519_ChaChaPoly_SHA256" if psk else b"Noise_NX_25519_ChaChaPoly_SHA256"
    ref = _ref(name, True, b"ctx", None, psk)
    ours = HandshakeState(False, prologue=b"ctx", s=X25519PrivateKey.generate(), psk_mode=psk is not None)
    if psk:
        ours.set_psk(psk)
    assert ours.read_message(ref.write_message(b"a")) == b"a"
    assert ref.read_message(ours.write_message(b"b")) == b"b"
    k1, k2 = ours.split()
    _check_transport(k2, ref, True, k1)


def _pair(psk_i=None, psk_r=None, prologue_i=b"", prologue_r=b""):
    i = HandshakeState(True, prologue=prologue_i, psk_mode=psk_i is not None)
    r = HandshakeState(False, prologue=prologue_r, s=X25519PrivateKey.generate(), psk_mode=psk_r is not None)
    if psk_i:
        i.set_psk(psk_i)
    if psk_r:
        r.set_psk(psk_r)
    return i, r


def test_every_flipped_byte_of_message_two_fails():
    i0, r0 = _pair()
    m1 = i0.write_message()
    r0.read_message(m1)
    m2 = r0.write_message(b"p")
    for pos in range(len(m2)):
        i, r = _pair()
        i.e = i0.e  # same ephemeral, so message 2 stays valid for it
        i.write_message()
        bad = bytearray(m2)
        bad[pos] ^= 0x01
        with pytest.raises(NoiseError):
            i.read_message(bytes(bad))
    i0.read_message(m2)  # and the untouched one verifies


def test_wrong_psk_or_prologue_fails_at_the_initiator():
    for i, r in (_pair(os.urandom(32), os.urandom(32)), _pair(prologue_i=b"x", prologue_r=b"y")):
        r.read_message(i.write_message())
        with pytest.raises(NoiseError):
            i.read_message(r.write_message())


def test_hkdf_is_rfc5869_with_empty_info():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    ck, ikm = os.urandom(32), os.urandom(32)
    expect = HKDF(algorithm=hashes.SHA256(), length=96, salt=ck, info=b"").derive(ikm)
    assert b"".join(hkdf(ck, ikm, 3)) == expect


def test_misuse_raises():
    i, r = _pair()
    with pytest.raises(ValueError):
        r.write_message()
    with pytest.raises(ValueError):
        i.split()
    with pytest.raises(ValueError):
        HandshakeState(False)
    with pytest.raises(ValueError):
        i.set_psk(b"x" * 32)
