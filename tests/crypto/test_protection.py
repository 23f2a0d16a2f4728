"""Packet protection: sealing and opening, tampering, replay, key update
with reordering, and the AEAD choice."""

from __future__ import annotations

import os
import random

import pytest

from gannet.crypto.protection import (
    AES_128_GCM,
    CHACHA20_POLY1305,
    REPLAY_WINDOW,
    Opener,
    ProtectionError,
    ReplayWindow,
    Sealer,
    choose_aead,
    cpu_has_aes,
)

HDR = 8


def _header(sealer: Sealer) -> bytes:
    return sealer.key_phase.to_bytes(1, "big") + sealer.pn.to_bytes(7, "big")


def _seal(sealer: Sealer, payload: bytes) -> tuple[int, int, bytes]:
    pn, phase = sealer.pn, sealer.key_phase
    return pn, phase, sealer.seal(_header(sealer), payload)


def _open(opener: Opener, pn: int, phase: int, datagram: bytes) -> bytes:
    return opener.open(datagram[:HDR], pn, phase, datagram[HDR:])


@pytest.mark.parametrize("aead", [AES_128_GCM, CHACHA20_POLY1305])
def test_round_trip_and_every_tamper_fails(aead):
    secret = os.urandom(32)
    s, o = Sealer(secret, aead), Opener(secret, aead)
    pn, phase, dg = _seal(s, b"payload bytes")
    assert b"payload" not in dg
    for pos in range(len(dg)):
        bad = bytearray(dg)
        bad[pos] ^= 0x80
        with pytest.raises(ProtectionError):
            _open(o, pn, phase, bytes(bad))
    for cut in (1, 5, 16):
        with pytest.raises(ProtectionError):
            _open(o, pn, phase, dg[:-cut])
    assert o.dropped == {"does not authenticate": len(dg) + 3}
    assert _open(o, pn, phase, dg) == b"payload bytes"


def test_wrong_key_and_wrong_direction_fail():
    a, b = os.urandom(32), os.urandom(32)
    pn, phase, dg = _seal(Sealer(a, AES_128_GCM), b"x")
    for opener in (Opener(b, AES_128_GCM), Opener(a, CHACHA20_POLY1305)):
        with pytest.raises(ProtectionError):
            _open(opener, pn, phase, dg)


def test_header_is_authenticated_packet_number_included():
    secret = os.urandom(32)
    s, o = Sealer(secret, AES_128_GCM), Opener(secret, AES_128_GCM)
    _seal(s, b"first")
    pn, phase, dg = _seal(s, b"second")
    with pytest.raises(ProtectionError):
        _open(o, pn - 1, phase, dg)  # a claimed number the tag was not made for


def test_replay_refused_and_forgeries_do_not_move_the_window():
    secret = os.urandom(32)
    s, o = Sealer(secret, AES_128_GCM), Opener(secret, AES_128_GCM)
    sent = [_seal(s, bytes([i])) for i in range(10)]
    for pn, phase, dg in sent:
        _open(o, pn, phase, dg)
    for pn, phase, dg in sent:
        with pytest.raises(ProtectionError, match="replayed"):
            _open(o, pn, phase, dg)
    # A forged packet with a huge number fails its tag and leaves the window.
    with pytest.raises(ProtectionError):
        o.open(b"\x00" * HDR, 10**9, 0, b"\x00" * 40)
    pn, phase, dg = _seal(s, b"next")
    assert _open(o, pn, phase, dg) == b"next"
    assert o.dropped["replayed"] == 10


def test_replay_window_bitmap():
    rng = random.Random(13)
    w = ReplayWindow(64)
    seen = set()
    highest = -1
    for _ in range(5000):
        pn = max(0, highest + rng.randint(-80, 5))
        why = w.check(pn)
        if pn in seen:
            assert why is not None
        elif pn <= highest - 64:
            assert why == "too old"
        else:
            assert why is None
            w.record(pn)
            seen.add(pn)
            highest = max(highest, pn)


@pytest.mark.parametrize("size", [64, REPLAY_WINDOW])
def test_replay_window_in_order_runs_and_gaps(size):
    """Mostly in-order numbers (which the window counts before it shifts its
    bitmap), with gaps, reordering, replays and runs recorded at once: its
    verdicts are those of the set of numbers accepted, and its bitmap the
    one that recording each number alone gives."""
    rng = random.Random(size)
    w = ReplayWindow(size)
    seen: set[int] = set()
    highest = -1
    for _ in range(20000):
        step = rng.choice([1] * 12 + [0, -1, -3, -size + 1, -size, -size - 1, 2, 7, size, 3 * size])
        pn = max(0, highest + step)
        why = w.check(pn)
        if pn in seen:
            assert why == "replayed" or (why == "too old" and pn <= highest - size)
        elif pn <= highest - size:
            assert why == "too old"
        else:
            assert why is None
            if pn > highest and rng.random() < 0.1:
                count = rng.randint(1, 80)
                w.record_run(pn, count)
                seen.update(range(pn, pn + count))
                highest = pn + count - 1
            else:
                w.record(pn)
                seen.add(pn)
                highest = max(highest, pn)
        assert w.highest == highest
    expected = sum(1 << (highest - n) for n in seen if highest - n < size)
    assert w.bitmap == expected


def test_key_update_with_reordering_and_old_key_discarded():
    rng = random.Random(7)
    interval = REPLAY_WINDOW + 100
    secret = os.urandom(32)
    s, o = Sealer(secret, CHACHA20_POLY1305, update_interval=interval), Opener(secret, CHACHA20_POLY1305)
    total = interval * 5 + 17
    sent = [_seal(s, pn.to_bytes(4, "big")) for pn in range(total)]
    assert s.generation == 5
    # Reorder within a window of 40 packets (across every key change).
    order = sorted(range(total), key=lambda i: i + rng.uniform(0, 40))
    for i in order:
        pn, phase, dg = sent[i]
        assert _open(o, pn, phase, dg) == i.to_bytes(4, "big")
    assert o.generation == 5 and o.opened == total and not o.dropped
    # The previous generation's key is gone once the window moved past it:
    # a stale packet is refused without any decryption attempt succeeding.
    pn, phase, dg = sent[interval * 4 + 1]
    with pytest.raises(ProtectionError):
        _open(o, pn, phase, dg)


def test_manual_update_changes_key_and_phase():
    secret = os.urandom(32)
    s, o = Sealer(secret, AES_128_GCM), Opener(secret, AES_128_GCM)
    a = _seal(s, b"a")
    s.update()
    b = _seal(s, b"b")
    assert a[1] != b[1]
    assert _open(o, *b) == b"b"
    assert _open(o, *a) == b"a"  # the previous key still opens a late packet
    assert o.generation == 1


def test_update_interval_must_exceed_window():
    with pytest.raises(ValueError):
        Sealer(os.urandom(32), AES_128_GCM, update_interval=REPLAY_WINDOW)


def test_aead_choice():
    assert cpu_has_aes("processor\t: 0\nflags\t\t: fpu sse2 aes avx\n")
    assert not cpu_has_aes("flags\t\t: fpu sse2 avx\n")
    assert cpu_has_aes("Features\t: fp asimd aes pmull\n")
    assert choose_aead(True, True) == AES_128_GCM
    assert choose_aead(True, False) == CHACHA20_POLY1305
    assert choose_aead(False, True) == CHACHA20_POLY1305
