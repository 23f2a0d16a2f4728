"""The AEAD over rows: the C primitive (gannet.crypto._rows) against its
Python equivalent (protection._seal_rows / _open_rows), and both, through
Sealer.seal_rows / Opener.open_rows, against sealing and opening one
datagram at a time: the same bytes, the same verdicts, the same counters."""

from __future__ import annotations

import importlib
import os
import random

import pytest
from crc32c import crc32c

from gannet.crypto import protection
from gannet.crypto.protection import (
    AES_128_GCM,
    CHACHA20_POLY1305,
    OVERHEAD,
    REPLAY_WINDOW,
    STOP_END,
    STOP_OTHER,
    STOP_TAG,
    Opener,
    ProtectionError,
    ReplayWindow,
    Sealer,
    _derive_keys,
    _open_rows,
    _seal_rows,
)
from gannet.wire.datagram import SHORT_FORM, VERSION, encode_short
from gannet.wire.segment import ACK, FIN, PSH
from gannet.wire.protected import (HEADER_SIZE, PROTECTED, parse_header, restore_inner, seal_header,
    sealed_plaintext)
from programs import under_ci

AEADS = [AES_128_GCM, CHACHA20_POLY1305]


def _native():
    """The C module, even under GANNET_PURE=1 (the differential test needs
    both); a source tree without a compiler has none (a CI build must)."""
    try:
        return importlib.import_module("gannet.crypto._rows")
    except ImportError as exc:
        if under_ci():
            raise
        pytest.skip(f"gannet.crypto._rows is not built here ({exc})")


def _train(rng: random.Random, size: int, rows: int, tail: int) -> bytearray:
    """Plaintext rows of `size` bytes (the last `tail` long if tail), each
    a datagram of either form (its first byte, flags of TCP's bits) ending
    in a CRC trailer as encode_run writes it."""
    out = bytearray()
    for i in range(rows):
        n = tail if tail and i == rows - 1 else size
        body = bytes((rng.choice([SHORT_FORM, VERSION]), rng.randrange(0x40))) + rng.randbytes(n - 6)
        out += body + crc32c(body).to_bytes(4, "little")
    return out


def _pair(aead: str, secret: bytes):
    """The same key in both forms: (cryptography AEAD, IV int, C Keys)."""
    native = _native()
    from gannet.crypto.noise import hkdf

    cls, key_size = protection.AEADS[aead]
    key, iv = hkdf(secret, b"gannet key and iv", 2)
    return cls(key[:key_size]), int.from_bytes(iv[:12], "big"), native.Keys(aead, key[:key_size], iv[:12])


@pytest.mark.parametrize("aead", AEADS)
def test_seal_rows_c_and_python_give_the_same_bytes(aead):
    rng = random.Random(1)
    for trial in range(40):
        cipher, iv, keys = _pair(aead, rng.randbytes(32))
        size = rng.choice([40, 100, 1444, 1500, 2048])
        rows = rng.randint(1, 12)
        tail = rng.choice([0, 0, rng.randint(12, size)])
        src = memoryview(_train(rng, size, rows, tail))
        flags, dst, pn = rng.randint(0, 1), rng.getrandbits(32), rng.getrandbits(40)
        length = len(src) + OVERHEAD * rows
        c_out, py_out = bytearray(length), bytearray(length)
        n_c = keys.seal_rows(src, size, c_out, PROTECTED, flags, dst, pn, rows)
        n_py = _seal_rows(cipher, iv, src, size, memoryview(py_out), PROTECTED, flags, dst, pn, rows)
        assert n_c == n_py == length
        assert c_out == py_out, f"trial {trial}"
        # and each row is the envelope of docs/security.md: its header, then
        # what cryptography's AEAD makes of the row without its CRC
        row0 = bytes(c_out[: min(size, len(src)) + OVERHEAD])
        assert parse_header(row0) == (flags, dst, pn & (1 << 23) - 1)
        plain = bytes(src[: min(size, len(src))])
        body = plain[8:-4] + bytes((plain[1] | (0x80 if plain[0] == SHORT_FORM else 0), plain[2], plain[3]))
        assert sealed_plaintext(plain) == body
        nonce = (iv ^ pn).to_bytes(12, "big")  # the full number
        assert row0[HEADER_SIZE:] == cipher.encrypt(nonce, body, row0[:HEADER_SIZE])


@pytest.mark.parametrize("aead", AEADS)
def test_python_rows_seal_a_writable_train_in_place_to_the_same_bytes(aead):
    """_seal_rows seals a writable train without copying it (the tail goes
    into each row's trailer room, which the tag replaces): the same bytes
    as from a read-only copy, and nothing of the train but that room
    changed."""
    rng = random.Random(7)
    cipher, iv, _ = _derive_keys(rng.randbytes(32), aead)
    for size, rows, tail in [(65000, 1, 0), (1444, 5, 0), (1444, 3, 100), (40, 4, 13)]:
        train = _train(rng, size, rows, tail)
        before = bytes(train)
        length = len(train) + OVERHEAD * rows
        copied, in_place = bytearray(length), bytearray(length)
        _seal_rows(cipher, iv, memoryview(before), size, memoryview(copied), PROTECTED, 1, 99, 5, rows)
        _seal_rows(cipher, iv, memoryview(train), size, memoryview(in_place), PROTECTED, 1, 99, 5, rows)
        assert in_place == copied
        for i in range(rows):
            off, end = i * size, min((i + 1) * size, len(train))
            assert train[off : end - 4] == before[off : end - 4]  # the datagram itself untouched
            assert train[end - 4 : end - 1] == sealed_plaintext(before[off:end])[-3:]  # the tail, in place


def _sealed_batch(rng, aead, secret, size, rows, tail=0, pn=100, flags=0, dst=7):
    s = Sealer(secret, aead)
    s.pn, s.key_phase = pn, flags
    src = memoryview(_train(rng, size, rows, tail))
    out = bytearray(len(src) + OVERHEAD * rows)
    s.seal_rows(src, size, rows, memoryview(out), dst)
    return bytearray(out), src


def _mutate(rng: random.Random, batch: bytearray, seg: int, rows: int) -> None:
    """One of the things an attacker or the network does to a row."""
    i = rng.randrange(rows)
    off = i * seg
    end = min(off + seg, len(batch))
    kind = rng.randrange(8)
    if kind == 0:  # flip a bit anywhere (header, ciphertext or tag)
        batch[rng.randrange(off, end)] ^= 1 << rng.randrange(8)
    elif kind == 1:  # the other key phase
        batch[off + 1] ^= 0x80
    elif kind == 2:  # another connection
        batch[off + 4] ^= 0x10
    elif kind == 3 and i:  # a replay of the row before
        batch[off:end] = batch[off - seg : off - seg + (end - off)]
    elif kind == 4:  # a packet number out of line
        batch[off + 3] ^= 0x05
    elif kind == 5:  # not sealed at all (a plaintext short form)
        batch[off] = 0x83
    elif kind == 6:  # a packet number from far away (its top truncated bits)
        batch[off + 1] ^= 0x40
    elif i == rows - 1:  # the last row cut short
        del batch[max(off + 1, end - rng.randrange(1, 30)) : end]
    else:  # the tag's last byte
        batch[end - 1] ^= 0x40


@pytest.mark.parametrize("aead", AEADS)
def test_open_rows_c_and_python_give_the_same_verdicts(aead):
    rng = random.Random(2)
    stops = set()
    for trial in range(150):
        secret = rng.randbytes(32)
        cipher, iv, keys = _pair(aead, secret)
        size = rng.choice([40, 300, 1444])
        rows = rng.randint(1, 10)
        tail = rng.choice([0, 0, rng.randint(12, size)])
        batch, _ = _sealed_batch(rng, aead, secret, size, rows, tail, pn=50, flags=trial & 1)
        for _ in range(rng.randint(0, 2)):
            _mutate(rng, batch, size + OVERHEAD, rows)
        seg = size + OVERHEAD if rows > 1 else 0
        after = rng.choice([-1, 49, 52])
        start = rng.randrange(rows)
        c_out, py_out = bytearray(len(batch)), bytearray(len(batch))
        args = (seg, start)
        rest = (10, PROTECTED, trial & 1, 7, after)
        got_c = keys.open_rows(batch, *args, c_out, *rest)
        got_py = _open_rows(cipher, iv, memoryview(batch), *args, memoryview(py_out), *rest)
        assert got_c == got_py, f"trial {trial}"
        assert c_out[: got_c[1]] == py_out[: got_py[1]]
        stops.add(got_c[4])
        # Without trailers: the same verdicts and inner datagrams, and no
        # CRC in the trailers' room: its first 3 bytes held the envelope's
        # tail while the row was opened (TAIL), its last is left as it was
        # (here: the marker byte 0xEE).
        c_bare, py_bare = bytearray(b"\xee" * len(batch)), bytearray(b"\xee" * len(batch))
        assert keys.open_rows(batch, *args, c_bare, *rest, False) == got_c
        assert _open_rows(cipher, iv, memoryview(batch), *args, memoryview(py_bare), *rest, False) == got_py
        assert c_bare[: got_c[1]] == py_bare[: got_py[1]]  # (past it: a refused row's leftovers)
        at = 10
        while at < got_c[1]:  # rows opened lie back to back, the last maybe shorter
            n = size if at + size <= got_c[1] else got_c[1] - at
            assert c_bare[at : at + n - 4] == c_out[at : at + n - 4]
            assert c_bare[at + n - 4 : at + n - 1] != c_out[at + n - 4 : at + n - 1]
            assert c_bare[at + n - 1] == 0xEE
            at += n
    assert stops == {STOP_END, STOP_OTHER, STOP_TAG}  # every way out was taken


@pytest.mark.parametrize("aead", AEADS)
def test_one_datagram_calls_are_the_rows_calls_of_one_row(aead):
    """Keys.seal_datagram / open_datagram (the path of a small message or
    an ACK) give the bytes and verdicts of seal_rows / open_rows of one
    row, whatever was done to the datagram on the way."""
    rng = random.Random(3)
    stops = set()
    for trial in range(200):
        secret = rng.randbytes(32)
        _, _, keys = _pair(aead, secret)
        size = rng.choice([20, 76, 300, 1444, 2048])
        src = _train(rng, size, 1, 0)
        flags, dst, pn = trial & 1, rng.getrandbits(32), rng.getrandbits(40)
        rows_out = bytearray(size + OVERHEAD)
        keys.seal_rows(memoryview(src), size, rows_out, PROTECTED, flags, dst, pn, 1)
        sealed = keys.seal_datagram(src, flags, dst, pn)
        assert type(sealed) is bytes and sealed == rows_out, f"trial {trial}"
        batch = bytearray(sealed)
        for _ in range(rng.randint(0, 2)):
            _mutate(rng, batch, len(batch), 1)
        after = rng.choice([-1, pn - 1, pn, pn + 3])
        trailers = rng.random() < 0.5
        by_rows, one = bytearray(len(batch) + 8), bytearray(len(batch) + 8)
        row, pos, first, count, stop = keys.open_rows(bytes(batch), 0, 0, by_rows, 0, PROTECTED, flags,
                                                      dst, after, trailers)
        got = keys.open_datagram(bytes(batch), one, flags, dst, after, trailers)
        assert got == (first if count else -1 - stop), f"trial {trial}"
        assert one[:pos] == by_rows[:pos]
        stops.add(stop)
    assert stops == {STOP_END, STOP_OTHER, STOP_TAG}
    with pytest.raises(ValueError):
        keys.seal_datagram(b"\x03" * 8, 0, 1, 0)  # shorter than a header and a trailer
    with pytest.raises(ValueError):
        keys.open_datagram(sealed, bytearray(8), flags, dst, -1, True)  # no room for the inner datagram


@pytest.mark.parametrize("aead", AEADS)
def test_opener_open_datagram_keeps_the_window_and_counters(aead):
    """Opener.open_datagram (one call of the C primitive) records the packet
    number, refuses a replay and a forgery, and counts them as open_rows does."""
    secret = bytes(range(32))
    sealer, opener = Sealer(secret, aead), Opener(secret, aead)
    rng = random.Random(4)
    plain = _train(rng, 80, 1, 0)
    sealed = [bytes(sealer.seal_datagram(plain, 7)) for _ in range(3)]
    out = bytearray(80)
    assert opener.open_datagram(sealed[1], out, 7, False) == STOP_END
    # (the inner datagram's destination ID is the envelope's: 7)
    assert out[:76] == plain[:4] + (7).to_bytes(4, "big") + plain[8:76]
    assert opener.window.highest == 1 and opener.opened == 1
    assert opener.open_datagram(sealed[1], out, 7) == STOP_OTHER  # a replay: the window judges
    assert opener.open_datagram(sealed[0], out, 7) == STOP_OTHER  # below the highest: the same
    forged = bytearray(sealed[2])
    forged[-1] ^= 1
    assert opener.open_datagram(bytes(forged), out, 7) == STOP_TAG
    assert opener.dropped == {"does not authenticate": 1} and opener.window.highest == 1
    assert opener.open_datagram(sealed[2], out, 7) == STOP_END
    assert opener.window.highest == 2 and opener.opened == 2


def _open_one_by_one(opener: Opener, batch, seg) -> list:
    """What a batch gives datagram by datagram through Opener.open: the
    plaintext (with CRC trailer) of each row, or the reason it was refused."""
    seg = seg if 0 < seg < len(batch) else len(batch)
    out = []
    for off in range(0, len(batch), seg):
        d = bytes(batch[off : off + seg])
        head = parse_header(d)
        if head is None or head[1] != 7:
            out.append("other")
            continue
        try:
            plain = opener.open(d[:HEADER_SIZE], opener.packet_number(head[2]), head[0], d[HEADER_SIZE:])
        except ProtectionError as exc:
            out.append(str(exc))
            continue
        buf = bytearray(HEADER_SIZE) + plain
        inner = bytes(buf[: restore_inner(buf, 0, len(plain), 7)])
        out.append(inner + crc32c(inner).to_bytes(4, "little"))
    return out


def _open_by_rows(opener: Opener, batch, seg) -> list:
    """The same through Opener.open_rows, falling back to Opener.open for
    the rows it leaves (as SecureEndpoint.receive_batch does)."""
    seg_n = seg if 0 < seg < len(batch) else len(batch)
    rows = -(-len(batch) // seg_n)
    result: list = [None] * rows
    buf = memoryview(bytes(batch))
    out = bytearray(len(batch))
    row = 0
    while row < rows:
        pos0 = 0
        stop_row, pos, opened, stop = opener.open_rows(buf, seg, row, memoryview(out), pos0, 7)
        at = 0
        for i in range(row, row + opened):  # rows opened lie back to back in `out`
            n = min(seg_n, len(batch) - i * seg_n) - OVERHEAD
            result[i] = bytes(out[at : at + n])
            at += n
        assert at == pos
        if stop == STOP_END:
            break
        if stop == STOP_TAG:
            result[stop_row] = "does not authenticate"
            row = stop_row + 1
            continue
        if stop_row > row:
            row = stop_row
            continue
        result[row] = _open_one_by_one(opener, buf[row * seg_n : (row + 1) * seg_n], 0)[0]
        row += 1
    return result


@pytest.mark.parametrize("aead", AEADS)
def test_open_rows_agrees_with_open_datagram_by_datagram(aead):
    """Batches with tampered, replayed, reordered rows and rows from the
    next key generation: the same plaintexts, the same refusals, the same
    counters and window, row by row."""
    rng = random.Random(3)
    for trial in range(25):
        secret = rng.randbytes(32)
        sealer = Sealer(secret, aead, update_interval=REPLAY_WINDOW + 1 + rng.randrange(60))
        one, rows_ = Opener(secret, aead), Opener(secret, aead)
        size = rng.choice([64, 1444])
        sent: list[bytes] = []
        for _ in range(rng.randint(3, 12)):
            count = rng.randint(1, 40)
            src = memoryview(_train(rng, size, count, 0))
            out = bytearray(len(src) + OVERHEAD * count)
            sealer.seal_rows(src, size, count, memoryview(out), 7)
            batch = bytearray(out)
            sent.extend(bytes(batch[i : i + size + OVERHEAD]) for i in range(0, len(batch), size + OVERHEAD))
            if rng.random() < 0.5:
                _mutate(rng, batch, size + OVERHEAD, count)
            if rng.random() < 0.3 and len(sent) > count:  # an old datagram replayed in the batch
                k = rng.randrange(count)
                batch[k * (size + OVERHEAD) : (k + 1) * (size + OVERHEAD)] = rng.choice(sent[:-count])
            if rng.random() < 0.2 and count > 2:  # two rows swapped
                k = (size + OVERHEAD)
                a, b = bytes(batch[:k]), bytes(batch[k : 2 * k])
                batch[:k], batch[k : 2 * k] = b, a
            seg = size + OVERHEAD if count > 1 else 0
            assert _open_by_rows(rows_, batch, seg) == _open_one_by_one(one, batch, seg), f"trial {trial}"
            assert rows_.dropped == one.dropped
            assert rows_.opened == one.opened
            assert (rows_.window.highest, rows_.window.bitmap) == (one.window.highest, one.window.bitmap)
            assert (rows_.generation, rows_.key_phase) == (one.generation, one.key_phase)
        assert sealer.generation >= 1 or sealer.pn < sealer.update_interval


@pytest.mark.parametrize("aead", AEADS)
def test_seal_rows_is_seal_datagram_by_datagram_across_a_key_update(aead):
    rng = random.Random(4)
    secret = rng.randbytes(32)
    by_rows = Sealer(secret, aead, update_interval=REPLAY_WINDOW + 5)
    by_one = Sealer(secret, aead, update_interval=REPLAY_WINDOW + 5)
    by_rows.pn = by_one.pn = REPLAY_WINDOW - 10
    by_rows._next_update = by_one._next_update = REPLAY_WINDOW + 3
    size, count = 200, 30  # the update falls inside the train
    src = memoryview(_train(rng, size, count, 77))
    out = bytearray(len(src) + OVERHEAD * count)
    assert by_rows.seal_rows(src, size, count, memoryview(out), 9) == len(out)
    expected = bytearray()
    for off in range(0, len(src), size):
        row = src[off : off + size]
        header = seal_header(by_one.key_phase, 9, by_one.pn)
        expected += by_one.seal(header, sealed_plaintext(row))
    assert out == expected
    assert (by_rows.pn, by_rows.key_phase, by_rows.generation) == (by_one.pn, by_one.key_phase, 1)
    assert bytes(by_rows.seal_datagram(bytes(src[:size]), 9)) == by_one.seal(
        seal_header(by_one.key_phase, 9, by_one.pn), sealed_plaintext(src[:size]))


@pytest.mark.parametrize("aead", AEADS)
def test_seal_short_is_seal_datagram_of_the_encoded_segment(aead):
    """Keys.seal_short (a small segment sealed from its fields, no
    plaintext datagram, no CRC) gives the bytes of seal_datagram over what
    encode_short writes, for any fields and payload, and refuses what the
    short form cannot carry."""
    rng = random.Random(9)
    for trial in range(300):
        _, _, keys = _pair(aead, rng.randbytes(32))
        flags = rng.choice([ACK, ACK | PSH, ACK | FIN, ACK | PSH | FIN, rng.randrange(0x80)])
        wnd, dst, seq, ack, tsval = (rng.getrandbits(16), rng.getrandbits(32), rng.getrandbits(32),
                                     rng.getrandbits(32), rng.getrandbits(32))
        payload = rng.randbytes(rng.choice([0, 1, 40, 64, 511, 512, 513, 1400, 9000]))
        payload = rng.choice([payload, bytearray(payload), memoryview(payload)])
        key_phase, pn = trial & 1, rng.getrandbits(rng.choice([8, 23, 24, 40, 61]))
        expected = keys.seal_datagram(encode_short(dst, flags, seq, ack, wnd, tsval, payload), key_phase, dst, pn)
        got = keys.seal_short(flags, wnd, dst, seq, ack, tsval, payload, key_phase, pn)
        assert type(got) is bytes and got == expected, f"trial {trial}"
    for bad in [(0x80, 0, 1, 0, 0, 0), (0x100, 0, 1, 0, 0, 0), (ACK, 1 << 16, 1, 0, 0, 0),
                (ACK, 0, 1 << 32, 0, 0, 0), (ACK, 0, 1, 1 << 32, 0, 0), (ACK, 0, 1, 0, 0, 1 << 32)]:
        with pytest.raises((ValueError, OverflowError)):
            keys.seal_short(*bad, b"x", 0, 0)


@pytest.mark.parametrize("aead", AEADS)
@pytest.mark.parametrize("native", [True, False])
def test_sealer_seal_short_is_seal_datagram_across_a_key_update(aead, native):
    """Sealer.seal_short (the one call where the primitive is built, else
    seal_datagram of encode_short) seals, numbers and updates keys as
    seal_datagram does over the encoded segment."""
    if native:
        _native()
    rng = random.Random(10)
    secret = rng.randbytes(32)
    short = Sealer(secret, aead, update_interval=REPLAY_WINDOW + 5)
    encoded = Sealer(secret, aead, update_interval=REPLAY_WINDOW + 5)
    if not native:
        short._rows = None
    short.pn = encoded.pn = REPLAY_WINDOW - 10
    short._next_update = encoded._next_update = REPLAY_WINDOW + 3
    for i in range(30):  # the key update falls among them
        fields = (rng.getrandbits(32), ACK | PSH, rng.getrandbits(32), rng.getrandbits(32),
                  rng.getrandbits(16), rng.getrandbits(32))
        payload = rng.randbytes(rng.choice([0, 64, 700]))
        got = short.seal_short(*fields, payload)
        assert bytes(got) == bytes(encoded.seal_datagram(encode_short(*fields, payload), fields[0])), f"{i}"
    assert (short.pn, short.key_phase, short.generation) == (encoded.pn, encoded.key_phase, 1)


def test_seal_rows_refuses_to_run_out_of_packet_numbers():
    s = Sealer(os.urandom(32), AES_128_GCM)
    s.pn = s._next_update = (1 << 62) - 2
    s.update_interval = 1 << 30
    out = bytearray(3 * (100 + OVERHEAD))
    src = memoryview(_train(random.Random(5), 100, 3, 0))
    with pytest.raises(ProtectionError, match="exhausted"):
        s.seal_rows(src, 100, 3, memoryview(out), 1)


def test_record_run_is_record_one_by_one():
    rng = random.Random(6)
    for _ in range(300):
        a, b = ReplayWindow(), ReplayWindow()
        for pn in rng.sample(range(5000), rng.randint(0, 50)):
            a.record(pn)
            b.record(pn)
        first = max(a.highest + 1, 0) + rng.choice([0, 1, 5, 100, REPLAY_WINDOW, 3 * REPLAY_WINDOW])
        count = rng.randint(1, 70)
        a.record_run(first, count)
        for pn in range(first, first + count):
            b.record(pn)
        assert (a.highest, a.bitmap) == (b.highest, b.bitmap)


def test_native_crc_is_crc32c():
    native = _native()
    rng = random.Random(7)
    # (short inputs one stream; from 192 bytes three streams combined, with
    # a tail that is not a whole word, and the combining constant cached
    # per length: two lengths alternating must both come out right)
    for n in (0, 1, 7, 8, 9, 63, 191, 192, 193, 200, 383, 1440, 1441, 1447, 1440, 65000, *range(190, 260)):
        data = rng.randbytes(n)
        assert native.crc32c(data) == crc32c(data)


def test_large_rows_take_the_python_equivalent(monkeypatch):
    """Rows above NATIVE_ROW_MAX are sealed through cryptography's AEAD even
    where the C primitive is built (docs/security.md says why)."""
    calls = []

    class Spy:
        def seal_rows(self, *args):
            calls.append(args)
            raise AssertionError("the C path was taken")

    s = Sealer(os.urandom(32), AES_128_GCM)
    s._rows = Spy()
    size = protection.NATIVE_ROW_MAX + 100
    src = memoryview(_train(random.Random(8), size, 1, 0))
    out = bytearray(size + OVERHEAD)
    assert s.seal_rows(src, size, 1, memoryview(out), 3) == len(out)
    assert not calls


def _established(pair):
    conn = pair.client.connect("s", pair.now)
    accepted = []

    def done():
        if not accepted and (srv := pair.server.accept()) is not None:
            accepted.append(srv)
        return bool(accepted) and conn.state.name == "ESTABLISHED"

    pair.run(done, 1000)
    return conn, accepted[0]


def test_a_batch_with_tampered_rows_delivers_the_good_rows_and_counts_the_bad():
    """One GRO batch of sealed rows, two of them altered: the others are
    opened and reach the connection (in one run up to the first bad row,
    kept out of order after it), the two are counted as unauthenticated,
    and once they arrive intact the stream is whole."""
    from securepair import Pair

    from gannet.crypto.endpoint import Security
    from gannet.wire.batch import Train

    pair = Pair(Security(has_aes=True), Security(has_aes=True), batches=True)
    conn, srv = _established(pair)
    data = random.Random(9).randbytes(30 * 1400)
    conn.send(data)
    trains = [t for t, _ in pair.client.datagrams_to_send(pair.now, trains=True) if type(t) is Train]
    assert trains
    train = trains[0]
    seg, rows = train.size, -(-len(train) // train.size)
    assert rows >= 8
    batch = bytearray(train)
    good = {i: bytes(batch[i * seg : (i + 1) * seg]) for i in (2, 5)}
    batch[2 * seg + 40] ^= 1  # ciphertext
    batch[6 * seg - 3] ^= 0x80  # the tag of row 5
    before = pair.server.security_stats.opened, pair.server.security_stats.unauthenticated_dropped
    pair.server.receive_batch(bytes(batch), seg, "c", pair.now)
    stats = pair.server.security_stats
    assert stats.unauthenticated_dropped - before[1] == 2
    assert stats.opened - before[0] == rows - 2
    payload = seg - OVERHEAD - 24  # each row's data (short header and CRC)
    assert srv.recv(1 << 20) == data[: 2 * payload]  # up to the first bad row
    for i in (2, 5):
        pair.server.receive_datagram(good[i], "c", pair.now)
    rest = bytearray()
    while chunk := srv.recv(1 << 20):
        rest += chunk
    assert bytes(rest) == data[2 * payload : rows * payload]
    assert stats.opened - before[0] == rows
    assert stats.unauthenticated_dropped - before[1] == 2


def test_a_secure_endpoint_takes_the_core_s_authenticated_flag_and_still_checks_every_tag():
    """SecureEndpoint.receive_batch has the plain endpoint's signature (an
    endpoint driven through the core's contract may pass `authenticated`),
    and the flag grants nothing: a tampered row is still dropped on its tag,
    the intact rows still open."""
    from securepair import Pair

    from gannet.crypto.endpoint import Security
    from gannet.wire.batch import Train

    pair = Pair(Security(has_aes=True), Security(has_aes=True), batches=True)
    conn, srv = _established(pair)
    data = random.Random(4).randbytes(12 * 1400)
    conn.send(data)
    train = next(t for t, _ in pair.client.datagrams_to_send(pair.now, trains=True) if type(t) is Train)
    seg, rows = train.size, -(-len(train) // train.size)
    assert rows >= 4
    batch = bytearray(train)
    batch[seg + 40] ^= 1  # row 1's ciphertext
    stats = pair.server.security_stats
    opened, dropped = stats.opened, stats.unauthenticated_dropped
    pair.server.receive_batch(bytes(batch), seg, "c", pair.now, authenticated=True)
    assert stats.unauthenticated_dropped - dropped == 1
    assert stats.opened - opened == rows - 1
    payload = seg - OVERHEAD - 24  # each row's data (short header and CRC)
    assert srv.recv(1 << 20) == data[:payload]  # up to the bad row
    one = bytearray(batch[seg : 2 * seg])
    pair.server.receive_batch(bytes(one), 0, "c", pair.now, True)  # one datagram, still bad
    assert stats.unauthenticated_dropped - dropped == 2


def test_a_replayed_batch_opens_nothing():
    from securepair import Pair

    from gannet.crypto.endpoint import Security
    from gannet.wire.batch import Train

    pair = Pair(Security(has_aes=True), Security(has_aes=True), batches=True)
    conn, srv = _established(pair)
    conn.send(bytes(20 * 1400))
    train = next(t for t, _ in pair.client.datagrams_to_send(pair.now, trains=True) if type(t) is Train)
    batch = bytes(train)
    pair.server.receive_batch(batch, train.size, "c", pair.now)
    stats = pair.server.security_stats
    opened, replayed = stats.opened, stats.replay_dropped
    pair.server.receive_batch(batch, train.size, "c", pair.now)
    rows = -(-len(batch) // train.size)
    assert (stats.opened, stats.replay_dropped) == (opened, replayed + rows)


@pytest.mark.parametrize("rows, tail", [(44, 0), (100, 0), (45, 300), (1, 0)])
def test_seal_train_splits_at_run_bytes_and_every_row_opens_to_the_original(rows, tail):
    """protection.seal_train (the compiled step per train): trains of rows
    OVERHEAD longer, none beyond the bytes one GSO send carries, packet
    numbers in order across them, and each row opens to the datagram it
    sealed (without the CRC trailer, which the tag replaced)."""
    from gannet.crypto.protection import seal_train
    from gannet.wire.batch import Train

    size, run_bytes, dst = 1444, 65_000, 0x0A0B0C0D
    secret = bytes(range(32))
    src = _train(random.Random(rows), size, rows, tail)
    src[4:8] = dst.to_bytes(4, "big")  # (the rows address the peer's ID; seal_train reads the first)
    original = bytes(src)
    train = Train(len(src))
    train[:] = src
    train.size = size
    train._parts = None
    sealer, opener = Sealer(secret, AES_128_GCM), Opener(secret, AES_128_GCM)
    trains = seal_train(sealer, train, run_bytes)
    assert sealer.pn == rows
    assert all(t.size == size + OVERHEAD and len(t) <= run_bytes for t in trains)
    assert sum(-(-len(t) // t.size) for t in trains) == rows
    assert len(trains) == -(-rows // (run_bytes // (size + OVERHEAD)))
    opened = bytearray()
    for t in trains:
        out = bytearray(len(t))
        row, pos, count, stop = opener.open_rows(memoryview(t), t.size, 0, memoryview(out), 0, dst, False)
        assert stop == STOP_END and count == -(-len(t) // t.size)
        opened += out[:pos]
    for i in range(rows):
        n = min(size, len(original) - i * size)
        want = original[i * size : i * size + n]
        got = opened[i * size : i * size + n]
        assert got[:4] + got[8 : n - 4] == want[:4] + want[8 : n - 4]
        assert int.from_bytes(got[4:8], "big") == dst


def test_a_full_run_is_sealed_into_one_gso_train():
    """The connection sizes its runs for the sealed rows (Config.
    datagram_overhead): a full run is one train, never one and a tail of a
    row (a run is two rows or more, so a one-row train is a split)."""
    from securepair import Pair, transfer

    from gannet.core.connection import RUN_BYTES
    from gannet.crypto.endpoint import Security
    from gannet.wire.batch import Train

    pair = Pair(Security(has_aes=True), Security(has_aes=True), batches=True,
                observed=True)  # (the spy goes on the instance)
    counts = []
    orig = pair.client.datagrams_to_send

    def spy(now, trains=False):
        out = orig(now, trains)
        counts.extend(-(-len(t) // t.size) for t, _ in out if type(t) is Train)
        return out

    pair.client.datagrams_to_send = spy
    data = random.Random(10).randbytes(3_000_000)
    assert transfer(pair, data) == data
    full = RUN_BYTES // (pair.client.config.max_datagram_size + OVERHEAD)
    assert max(counts) == full
    assert 1 not in counts


@pytest.mark.parametrize("row", [
    bytes((0x43, 0x10)) + bytes(30),  # not a plaintext datagram (a sealed one)
    bytes((SHORT_FORM, 0x90)) + bytes(30),  # flags with bit 7 (CWR), which the envelope's tail uses
    bytes((VERSION, 0x10)) + bytes(9),  # shorter than the header it would leave out
])
def test_both_refuse_to_seal_what_is_not_a_plaintext_datagram(row):
    """The envelope leaves out the first byte and restores the form from
    bit 7 of the flags: a row it could not restore is refused by both."""
    cipher, iv, keys = _pair(AES_128_GCM, bytes(32))
    out = bytearray(len(row) + OVERHEAD)
    with pytest.raises(ValueError):
        keys.seal_rows(row, len(row), out, PROTECTED, 0, 1, 0, 1)
    with pytest.raises(ValueError):
        _seal_rows(cipher, iv, memoryview(row), len(row), memoryview(out), PROTECTED, 0, 1, 0, 1)


def test_aes_gcm_rows_pass_nonce_and_tag_as_parameters_under_openssl_3():
    """The cheaper call pattern (docs/security.md, Performance) is the one
    in use where the library is OpenSSL 3, and only for AES-GCM; the tests
    above hold it to the Python equivalent's bytes and verdicts."""
    import ssl

    rows = _native()
    aes = rows.Keys(AES_128_GCM, bytes(range(16)), bytes(12))
    chacha = rows.Keys(CHACHA20_POLY1305, bytes(range(32)), bytes(12))
    assert chacha.param_path == 0
    if ssl.OPENSSL_VERSION_INFO >= (3,):
        assert aes.param_path == 1


def test_a_batch_of_several_connections_rows_is_each_connection_s_own(monkeypatch):
    """A GRO batch holding one sealed row from each of several connections
    of one peer (a tunnel's requests, one per client): each row reaches its
    connection, and since rows of different connections can form no run,
    none of them is scanned for runs (each takes a lone datagram's path);
    a batch of one connection's rows still is."""
    from securepair import Pair

    import gannet.core.endpoint as core_endpoint
    from gannet.crypto.endpoint import Security
    from gannet.wire.batch import Train

    scanned = []
    scan = core_endpoint.scan

    def counted(buf, seg, authenticated=False):
        scanned.append(len(buf) // seg)
        return scan(buf, seg, authenticated)

    monkeypatch.setattr(core_endpoint, "scan", counted)
    pair = Pair(Security(has_aes=True), Security(has_aes=True), batches=True)
    pairs = [_established(pair) for _ in range(3)]
    pair.run(lambda: not pair.step(), 100)  # (every ACK delivered)
    messages = [bytes([65 + i]) * 40 for i in range(len(pairs))]
    for (conn, _), msg in zip(pairs, messages):
        conn.send(msg)
    out = [bytes(d) for d, _ in pair.client.datagrams_to_send(pair.now, trains=True)]
    assert len(out) == 3 and len({len(d) for d in out}) == 1  # one row each, of one size
    opened = pair.server.security_stats.opened
    pair.server.receive_batch(b"".join(out), len(out[0]), "c", pair.now)
    assert pair.server.security_stats.opened - opened == 3
    assert [srv.recv(100) for _, srv in pairs] == messages
    assert scanned == []
    # One connection's rows in one batch: scanned (so the count above can fail).
    conn, srv = pairs[0]
    conn.send(bytes(6 * 1400))
    train = next(t for t, _ in pair.client.datagrams_to_send(pair.now, trains=True) if type(t) is Train)
    pair.server.receive_batch(bytes(train), train.size, "c", pair.now)
    assert scanned
    assert len(srv.recv(1 << 20)) > 1400
