"""Truncated packet numbers (gannet.wire.protected): the header carries the
low 23 bits, the receiver reconstructs the rest from the largest it has
opened (RFC 9000 Appendix A.3), and the nonce uses the full number - across
the wrap of the truncated field, with reordering, and with a number far
from the window, which must be refused."""

from __future__ import annotations

import importlib
import os
import random

import pytest
from crc32c import crc32c
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gannet.crypto.noise import hkdf
from gannet.crypto.protection import (
    AES_128_GCM,
    CHACHA20_POLY1305,
    REPLAY_WINDOW,
    STOP_END,
    STOP_TAG,
    Opener,
    ProtectionError,
    Sealer,
    _open_rows,
)
from gannet.wire.datagram import SHORT_FORM
from gannet.wire.protected import (
    HEADER_SIZE,
    OVERHEAD,
    PN_BITS,
    PN_MASK,
    PROTECTED,
    decode_packet_number,
    parse_header,
    restore_inner,
)
from programs import under_ci

WIN = 1 << PN_BITS
DST = 0x0BADCAFE


def test_the_rfc_example():
    # RFC 9000 Appendix A.3 (16 bits on the wire)
    assert decode_packet_number(0xA82F30EA, 0x9B32, 16) == 0xA82F9B32


def test_every_number_within_half_a_window_comes_back():
    rng = random.Random(1)
    largests = [-1, 0, 5, WIN // 2 - 1, WIN // 2, WIN - 1, WIN, WIN + 1, 3 * WIN - 2, (1 << 40) + 17]
    largests += [rng.getrandbits(rng.choice([24, 40, 61])) for _ in range(200)]
    for largest in largests:
        # from 2^22 - 1 behind to 2^22 + 1 ahead of the largest (half a
        # window either side of the next number expected)
        for delta in [1, 2, 100, WIN // 2, WIN // 2 + 1, 0, -1, -REPLAY_WINDOW, -(WIN // 2) + 2,
                      rng.randint(-(WIN // 2) + 2, WIN // 2 + 1)]:
            pn = largest + delta
            if pn < 0:
                continue
            assert decode_packet_number(largest, pn & PN_MASK) == pn, (largest, delta)


def test_a_number_beyond_half_a_window_comes_back_wrong():
    for largest in (WIN + 1000, 5 * WIN):
        pn = largest + 1 + WIN // 2 + 1  # just past the half window ahead
        assert decode_packet_number(largest, pn & PN_MASK) == pn - WIN
        pn = largest + WIN + 7  # a whole window ahead: the same low bits as largest + 7
        assert decode_packet_number(largest, pn & PN_MASK) == largest + 7
        pn = largest - WIN // 2 + 1  # just past the half window behind
        assert decode_packet_number(largest, pn & PN_MASK) == pn + WIN
    assert decode_packet_number(-1, WIN // 2 + 3) == WIN // 2 + 3  # (no number is below 0)


def _datagram(rng: random.Random, n: int = 60) -> bytes:
    body = bytes((SHORT_FORM, 0x10)) + rng.randbytes(2) + DST.to_bytes(4, "big") + rng.randbytes(n - 12)
    return body + crc32c(body).to_bytes(4, "little")


def _open(opener: Opener, sealed: bytes) -> bytes:
    """The inner datagram (with its CRC) as SecureEndpoint._open makes it."""
    phase, dst, truncated = parse_header(sealed)
    plain = opener.open(sealed[:HEADER_SIZE], opener.packet_number(truncated), phase, sealed[HEADER_SIZE:])
    buf = bytearray(HEADER_SIZE) + plain
    inner = bytes(buf[: restore_inner(buf, 0, len(plain), dst)])
    return inner + crc32c(inner).to_bytes(4, "little")


@pytest.mark.parametrize("aead", [AES_128_GCM, CHACHA20_POLY1305])
@pytest.mark.parametrize("start", [WIN - 40, 2 * WIN - 200, (7 << 40) - 100])
def test_reordered_datagrams_open_across_the_wrap(aead, start):
    """Datagrams whose numbers cross a multiple of 2^23 (the truncated
    field wraps to 0), delivered shuffled within the replay window: each
    opens to what was sealed, none twice, and a replay is refused."""
    rng = random.Random(start)
    secret = os.urandom(32)
    sealer, opener = Sealer(secret, aead, update_interval=1 << 30), Opener(secret, aead)
    sealer.pn = sealer._next_update = start - 1
    sealer._next_update = 1 << 50
    sealer.seal_datagram(_datagram(rng), DST)  # lost: the receiver starts from none
    opener.window.record(start - 50)  # (as if it had opened that one)
    sent = []
    for _ in range(400):
        d = _datagram(rng, rng.randint(24, 300))
        sent.append((d, bytes(sealer.seal_datagram(d, DST))))
    assert any(parse_header(s)[2] < parse_header(sent[0][1])[2] for _, s in sent)  # it wrapped
    order = list(range(len(sent)))
    for i in range(0, len(order), 50):  # shuffled in blocks, well within the window
        block = order[i : i + 50]
        rng.shuffle(block)
        order[i : i + 50] = block
    for i in order:
        assert _open(opener, sent[i][1]) == sent[i][0]
    assert opener.window.highest == start + len(sent) - 1
    with pytest.raises(ProtectionError, match="replayed"):
        _open(opener, sent[rng.randrange(len(sent))][1])


@pytest.mark.parametrize("ahead", [WIN // 2 + 3, WIN + 5, 5 * WIN])
def test_a_number_far_outside_the_window_is_refused(ahead):
    """A datagram sealed with a number more than half a window away from
    the largest opened (a burst of 2^22 losses, or a forgery) reconstructs
    to another number: the tag fails, it is counted and moves nothing."""
    rng = random.Random(ahead)
    secret = os.urandom(32)
    sealer, opener = Sealer(secret, AES_128_GCM, update_interval=1 << 40), Opener(secret, AES_128_GCM)
    sealer.pn = 3 * WIN + 10
    opener.window.record(3 * WIN + 9)  # (as if it had opened the ones before)
    first = _datagram(rng)
    assert _open(opener, bytes(sealer.seal_datagram(first, DST))) == first
    sealer.pn += ahead
    far = bytes(sealer.seal_datagram(_datagram(rng), DST))
    window = (opener.window.highest, opener.window.bitmap)
    with pytest.raises(ProtectionError):
        _open(opener, far)
    assert sum(opener.dropped.values()) == 1
    assert (opener.window.highest, opener.window.bitmap) == window
    sealer.pn = 3 * WIN + 11  # and the next in line still opens
    d = _datagram(rng)
    assert _open(opener, bytes(sealer.seal_datagram(d, DST))) == d


def _native():
    try:
        return importlib.import_module("gannet.crypto._rows")
    except ImportError as exc:
        if under_ci():
            raise
        pytest.skip(f"gannet.crypto._rows is not built here ({exc})")


@pytest.mark.parametrize("start", [WIN - 5, 4 * WIN - 1])
def test_a_batch_across_the_wrap_opens_in_one_call_c_and_python(start):
    """The rows path reconstructs too: a GRO batch whose numbers cross the
    wrap opens in one call, the C primitive and its Python equivalent
    alike; a row sealed a whole window ahead stops the call (its tag)."""
    native = _native()
    rng = random.Random(start)
    secret = os.urandom(32)
    sealer = Sealer(secret, AES_128_GCM, update_interval=1 << 40)
    sealer.pn = start
    size, rows = 200, 12
    src = b"".join(_datagram(rng, size) for _ in range(rows))
    batch = bytearray(len(src) + OVERHEAD * rows)
    sealer.seal_rows(memoryview(src), size, rows, memoryview(batch), DST)
    # the same key for both (the C one made here: the pure build has none)
    key, iv_bytes = hkdf(secret, b"gannet key and iv", 2)
    aead, iv = AESGCM(key[:16]), int.from_bytes(iv_bytes[:12], "big")
    keys = native.Keys(AES_128_GCM, key[:16], iv_bytes[:12])
    seg = size + OVERHEAD
    c_out, py_out = bytearray(len(batch)), bytearray(len(batch))
    args = (seg, 0)
    rest = (0, PROTECTED, 0, DST, start - 3)
    got_c = keys.open_rows(batch, *args, c_out, *rest)
    got_py = _open_rows(aead, iv, memoryview(batch), *args, memoryview(py_out), *rest)
    assert got_py == (rows, len(src), start, rows, STOP_END)
    assert py_out[: len(src)] == src
    assert got_c == got_py and c_out == py_out
    # a row a whole window ahead of the one before: same low bits, other nonce
    sealer.pn = start + rows + WIN
    far = bytearray(size + OVERHEAD)
    sealer.seal_rows(memoryview(src[:size]), size, 1, memoryview(far), DST)
    assert parse_header(far)[2] == (start + rows) & PN_MASK
    batch[seg * rows :] = far
    c_out, py_out = bytearray(len(batch)), bytearray(len(batch))
    got_py = _open_rows(aead, iv, memoryview(batch), *args, memoryview(py_out), *rest)
    assert got_py[3:] == (rows, STOP_TAG)
    assert keys.open_rows(batch, *args, c_out, *rest) == got_py
