"""Packet protection after the handshake: one AEAD seal per datagram, a
replay window, and key updates, sans-I/O.

Each direction has its own traffic secret (from the handshake's Split) and
its own packet number: a 62-bit counter that starts at 0 and grows by one
for every datagram sent, retransmissions included. Its low 23 bits travel
in the header; the receiver reconstructs the rest from the largest it has
opened (gannet.wire.protected.decode_packet_number, RFC 9000 Appendix A).
The AEAD nonce is the per-direction IV XOR the full packet number (as TLS
1.3 and QUIC form it), so a nonce never repeats under one key. Gannet's
sequence numbers cannot serve: a retransmission reuses its sequence number
with possibly different bytes (a larger ACK, a new window), and the same
nonce twice under AES-GCM or ChaCha20-Poly1305 gives the keystream and the
authentication key away.

Key update (QUIC's key phase, RFC 9001 section 6, made per direction): the
sender moves to the next generation of its secret every `update_interval`
datagrams and flips the key-phase bit it sends; the receiver, seeing the
other bit on a packet number above what it has seen, tries the next
generation, and keeps the previous one only until its replay window has
moved past the first packet of the new generation. Each direction updates
by itself, so nothing waits for the peer and nothing stalls. The interval
must exceed the replay window, so that a packet's phase bit and number
always say which generation it is from.

The replay window (WireGuard's, RFC 6479's sliding bitmap) rejects a packet
number seen before or older than the window. A packet is checked before it
is opened and recorded only after its tag verified, so forged packets
cannot move the window.

Rows: a GSO train is sealed, and a GRO batch opened, in one call of the C
extension gannet.crypto._rows (OpenSSL's AEADs over every row) where it is
built, and otherwise by `_seal_rows` / `_open_rows` here, its Python
equivalent, which gives the same bytes and the same verdicts. Either does
only the AEAD over rows: which key, which packet numbers, the window and
key updates are decided here, in `Sealer.seal_rows` and
`Opener.open_rows`. A batch opens in one call while its rows are the
common case (the current key phase, for the expected connection, packet
numbers climbing by one above the window); any other row stops the call
and is opened by `Opener.open`, the one path that handles every case
(docs/security.md, Performance).
"""

from __future__ import annotations

import struct
from typing import Any, Final, Union

from ..wire.checksum import crc32c
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .._build import extension
from ..wire.batch import Train, _reuse, release
from ..wire.datagram import DATA_OVERHEAD, encode_short
from ..wire.protected import (
    ELIDED,
    HEADER_SIZE,
    KEY_PHASE,
    PN_MASK,
    PROTECTED,
    TAIL,
    decode_packet_number,
    parse_header,
    restore_inner,
    seal_header,
    sealed_plaintext,
    sealed_plaintext_in_place,
)
from .noise import hkdf

# The C rows primitive, or None: then `_seal_rows` / `_open_rows` run.
_rows: Any = extension("gannet.crypto._rows")
NATIVE_ROWS: Final = _rows is not None
# Rows longer than this take `_seal_rows` / `_open_rows` even where the C
# primitive is built. It saves the Python work of every row, which is most
# of a small row's cost, but it calls the system's libcrypto, and
# `cryptography` carries its own OpenSSL, whose AES-GCM can be the faster
# per byte (measured on x86-64 with VAES: OpenSSL 3.0.19 at 4.3-4.7 GB/s
# beside cryptography's 7.5-8.5 GB/s, each row through `cryptography`
# costing about 1 us more; equal cost per row at about 16 KB, the C call
# ahead below it: bench/row_cost.py, docs/security.md).
NATIVE_ROW_MAX: Final = 16384

AES_128_GCM: Final = "aes-128-gcm"
CHACHA20_POLY1305: Final = "chacha20-poly1305"
Cipher = Union[AESGCM, ChaCha20Poly1305]
AEADS: dict[str, tuple[type[AESGCM] | type[ChaCha20Poly1305], int]] = {
    AES_128_GCM: (AESGCM, 16), CHACHA20_POLY1305: (ChaCha20Poly1305, 32)}
# (the AEAD, the IV as an integer, the same key for the C rows primitive or None)
Keys = tuple[Cipher, int, Any]
TAG_SIZE: Final = 16
IV_SIZE: Final = 12
REPLAY_WINDOW: Final = 2048  # packets; WireGuard keeps 2048 - 64
# Datagrams under one key before an update. RFC 9001 section 6.6 allows
# 2^23 full-size packets under AES-GCM for confidentiality; fewer keeps the
# margin and bounds what one key ever protected.
UPDATE_INTERVAL: Final = 1 << 22
_PN_HIGH: Final = 1 << 62  # packet numbers stop well before the nonce space does

_PN = struct.Struct("!Q")
_CRC = struct.Struct("<I")  # an opened row's trailer (the plaintext form's)
TRAILER_SIZE: Final = 4
OVERHEAD: Final = HEADER_SIZE + TAG_SIZE - TRAILER_SIZE - ELIDED  # gannet.wire.protected.OVERHEAD

# Why `open_rows` stopped before the last row (the values _rows.c returns).
STOP_END: Final = 0  # every row opened
STOP_OTHER: Final = 1  # a row that is not the common case: `Opener.open` must judge it
STOP_TAG: Final = 2  # a common-case row that does not authenticate (counted)


class ProtectionError(ValueError):
    """A datagram that does not open: forged, altered, replayed, or sealed
    under another key. The message says which."""


def cpu_has_aes(cpuinfo: str) -> bool:
    """True when the text of Linux's /proc/cpuinfo lists AES instructions
    (the `aes` flag; ARM's `Features: aes`): AES-GCM is then faster than
    ChaCha20-Poly1305, and constant-time. Elsewhere ChaCha20-Poly1305 is.
    (The adapter reads the file: gannet.io.security.)"""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features") and "aes" in value.split():
            return True
    return False


def choose_aead(local_has_aes: bool, peer_has_aes: bool) -> str:
    """AES-GCM only when both ends have AES instructions: a side without
    them would pay several times the cost and leak timing."""
    return AES_128_GCM if local_has_aes and peer_has_aes else CHACHA20_POLY1305


def next_secret(secret: bytes) -> bytes:
    """The next generation of a traffic secret (one-way: an old key cannot
    be found from a new one)."""
    return hkdf(secret, b"gannet key update", 1)[0]


def _derive_keys(secret: bytes, aead: str) -> Keys:
    """The AEAD, the IV as an integer (the nonce is IV XOR packet number),
    and the same key for the C rows primitive (None without it)."""
    cls, key_size = AEADS[aead]
    key, iv = hkdf(secret, b"gannet key and iv", 2)
    rows = _rows.Keys(aead, key[:key_size], iv[:IV_SIZE]) if _rows is not None else None
    return cls(key[:key_size]), int.from_bytes(iv[:IV_SIZE], "big"), rows


def _seal_rows(aead: Cipher, iv: int, src: memoryview, size: int, out: memoryview, form: int,
               flags: int, dst_cid: int, pn: int, rows: int) -> int:
    """The Python equivalent of _rows.Keys.seal_rows: the first `rows`
    datagrams of `src` (`size` bytes each, the last maybe shorter, each
    ending in a CRC trailer that the tag replaces) sealed into `out` as rows
    OVERHEAD longer, packet numbers from `pn` (the envelope of
    gannet.wire.protected). Returns the bytes written. A writable `src`
    is sealed without a copy: each row's trailer room, which the tag
    replaces, then holds the envelope's tail (`sealed_plaintext_in_place`);
    a read-only one is copied row by row."""
    encrypt_into = aead.encrypt_into
    out = memoryview(out)  # (a slice of a bytearray would be a copy)
    src = memoryview(src)
    in_place = not src.readonly
    pos = 0
    for i in range(rows):
        row = src[i * size : (i + 1) * size]
        if len(row) <= TRAILER_SIZE:
            raise ValueError("fewer rows than asked for")
        plaintext: bytes | memoryview = sealed_plaintext_in_place(row) if in_place else sealed_plaintext(row)
        header = seal_header(flags, dst_cid, pn + i, form)
        out[pos : pos + HEADER_SIZE] = header
        end = pos + HEADER_SIZE + len(plaintext) + TAG_SIZE
        encrypt_into((iv ^ (pn + i)).to_bytes(IV_SIZE, "big"), plaintext, header, out[pos + HEADER_SIZE : end])
        pos = end
    return pos


def _open_rows(aead: Cipher, iv: int, buf: memoryview, seg: int, start: int, out: memoryview, pos: int,
               form: int, flags: int, dst_cid: int, after: int,
               trailers: bool = True) -> tuple[int, int, int, int, int]:
    """The Python equivalent of _rows.Keys.open_rows: the rows of `buf`
    (`seg` bytes each, the last maybe shorter) from row `start` opened into
    `out` at `pos`, each as its inner datagram and CRC32C trailer, while
    each is the common case - a sealed datagram of `form` with key phase
    `flags` for `dst_cid`, its packet number (reconstructed from `after`,
    the largest opened) above `after` (the first) or one above the row
    before. Returns (the row it stopped at, the position after the last
    written, the first packet number opened, how many were, why it
    stopped: STOP_END, STOP_OTHER or STOP_TAG). Without `trailers` the CRC
    trailers are left unwritten (their room is kept)."""
    n = len(buf)
    if seg <= 0 or seg >= n:
        seg = n
    buf, out = memoryview(buf), memoryview(out)  # (a slice of a bytearray would be a copy)
    row, count, first, prev = start, 0, 0, 0
    for off in range(start * seg, n, seg):
        datagram = buf[off : off + seg]
        head = parse_header(datagram)
        if head is None or datagram[0] != form or head[0] != flags or head[1] != dst_cid:
            return row, pos, first, count, STOP_OTHER
        if count:
            pn = prev + 1
            if head[2] != pn & PN_MASK:
                return row, pos, first, count, STOP_OTHER
        else:
            pn = decode_packet_number(after, head[2])
            if pn <= after:
                return row, pos, first, count, STOP_OTHER
        body = len(datagram) - HEADER_SIZE - TAG_SIZE
        if len(out) - pos < body + HEADER_SIZE - TAIL + TRAILER_SIZE:
            raise ValueError("output buffer too small")
        try:
            aead.decrypt_into((iv ^ pn).to_bytes(IV_SIZE, "big"), datagram[HEADER_SIZE:],
                              datagram[:HEADER_SIZE], out[pos + HEADER_SIZE : pos + HEADER_SIZE + body])
        except InvalidTag:
            return row, pos, first, count, STOP_TAG
        inner = restore_inner(out, pos, body, dst_cid)
        if trailers:
            _CRC.pack_into(out, pos + inner, crc32c(out[pos : pos + inner]))
        pos += inner + TRAILER_SIZE
        if not count:
            first = pn
        prev = pn
        count += 1
        row += 1
    return row, pos, first, count, STOP_END


class Sealer:
    """The sending half: seals datagrams under the current generation.

    `seal(header_fn, plaintext)` asks `header_fn(pn, key_phase)` for the
    header bytes (authenticated, not encrypted) and returns header +
    ciphertext + tag."""

    __slots__ = ("aead", "_secret", "_aead", "_iv", "_rows", "pn", "key_phase", "update_interval",
                 "_next_update", "generation")

    def __init__(self, secret: bytes, aead: str, *, update_interval: int = UPDATE_INTERVAL) -> None:
        if update_interval <= REPLAY_WINDOW:
            raise ValueError(f"update_interval must exceed the replay window ({REPLAY_WINDOW})")
        self.aead = aead
        self._secret = secret
        self._aead, self._iv, self._rows = _derive_keys(secret, aead)
        self.pn = 0  # the next packet number
        self.key_phase = 0
        self.generation = 0
        self.update_interval = update_interval
        self._next_update: int = min(update_interval, _PN_HIGH)  # (never past the limit: seal_datagram's guard)

    def seal(self, header: bytes, plaintext: bytes | bytearray | memoryview) -> bytes:
        """Seal one datagram whose header (built with `self.pn` and
        `self.key_phase`, see `next_header_fields`) is `header`."""
        pn = self.pn
        if pn >= _PN_HIGH:
            raise ProtectionError("packet numbers exhausted: the connection must end")
        out = header + self._aead.encrypt((self._iv ^ pn).to_bytes(IV_SIZE, "big"), plaintext, header)
        self.pn = pn = pn + 1
        if pn >= self._next_update:
            self.update()
        return out

    def seal_into(self, header: bytes, plaintext: bytes | bytearray | memoryview,
                  out: memoryview) -> int:
        """`seal`, written into `out` (header, ciphertext, tag); returns the
        length written. For a train: no intermediate bytes per datagram."""
        pn = self.pn
        if pn >= _PN_HIGH:
            raise ProtectionError("packet numbers exhausted: the connection must end")
        h = len(header)
        out[:h] = header
        n = h + self._aead.encrypt_into((self._iv ^ pn).to_bytes(IV_SIZE, "big"), plaintext, header,
                                        out[h : h + len(plaintext) + TAG_SIZE])
        self.pn = pn = pn + 1
        if pn >= self._next_update:
            self.update()
        return n

    def seal_rows(self, src: memoryview, size: int, rows: int, out: memoryview, dst_cid: int) -> int:
        """Seal the first `rows` datagrams of a train (`size` bytes each, the
        last maybe shorter, each ending in its CRC trailer, which the tag
        replaces) into `out` as envelopes (gannet.wire.protected) for
        `dst_cid`, one packet number each; returns the bytes written. Calls
        the rows primitive once per key generation the rows span. Rows above
        NATIVE_ROW_MAX of a writable `src` are sealed in place: their
        trailer room is overwritten (`_seal_rows`)."""
        pos = 0
        done = 0
        while done < rows:
            pn = self.pn
            n = min(rows - done, self._next_update - pn, _PN_HIGH - pn)
            if n <= 0:
                raise ProtectionError("packet numbers exhausted: the connection must end")
            part = src[done * size :]
            flags = self.key_phase & KEY_PHASE
            if self._rows is not None and size <= NATIVE_ROW_MAX:
                pos += self._rows.seal_rows(part, size, out[pos:], PROTECTED, flags, dst_cid, pn, n)
            else:
                pos += _seal_rows(self._aead, self._iv, part, size, out[pos:], PROTECTED, flags, dst_cid,
                                  pn, n)
            self.pn = pn = pn + n
            done += n
            if pn >= self._next_update:
                self.update()
        return pos

    def _one_step(self, n: int) -> Any:
        """The rows primitive, when a datagram of `n` bytes can be sealed by
        one call of it that makes the sealed bytes (seal_rows' one step: no
        key update or limit near, a size the primitive takes); else None."""
        rows = self._rows
        if rows is not None and self.pn + 1 < self._next_update and n <= NATIVE_ROW_MAX:
            return rows
        return None

    def seal_datagram(self, datagram: bytes | bytearray | memoryview, dst_cid: int) -> bytes | bytearray:
        """One plaintext datagram (with its CRC trailer, which the tag
        replaces) sealed for `dst_cid`: `seal_rows` of one row."""
        n = len(datagram)
        pn = self.pn
        rows = self._one_step(n)
        if rows is not None:
            sealed: bytes = rows.seal_datagram(datagram, self.key_phase, dst_cid, pn)
            self.pn = pn + 1
            return sealed
        rows = self._rows
        if rows is None:  # one `seal`: fewer steps than the rows path for one row
            return self.seal(seal_header(self.key_phase, dst_cid, pn), sealed_plaintext(datagram))
        out = bytearray(n + OVERHEAD)
        self.seal_rows(memoryview(datagram), n, 1, memoryview(out), dst_cid)
        return out

    def seal_short(self, dst_cid: int, flags: int, seq: int, ack: int, wnd: int, tsval: int,
                   payload: bytes | bytearray | memoryview) -> bytes | bytearray:
        """`seal_datagram` of the short-form datagram these fields make
        (wire.datagram.encode_short), the same bytes. Where the rows
        primitive is built, that datagram is never made: the fields go
        straight into the envelope, and the CRC32C trailer that sealing
        would drop is never computed (a small message's or an ACK's send
        path: docs/design.md, "One small segment through an endpoint")."""
        pn = self.pn
        rows = self._one_step(DATA_OVERHEAD + len(payload))
        if rows is not None:
            sealed: bytes = rows.seal_short(flags, wnd, dst_cid, seq, ack, tsval, payload, self.key_phase, pn)
            self.pn = pn + 1
            return sealed
        return self.seal_datagram(encode_short(dst_cid, flags, seq, ack, wnd, tsval, payload), dst_cid)

    def update(self) -> None:
        """Move to the next key generation now."""
        self._secret = next_secret(self._secret)
        self._aead, self._iv, self._rows = _derive_keys(self._secret, self.aead)
        self.key_phase ^= 1
        self.generation += 1
        self._next_update = min(self.pn + self.update_interval, _PN_HIGH)


def seal_train(sealer: Sealer, train: Train, run_bytes: int) -> list[Train]:
    """A run's train sealed row by row into trains of rows OVERHEAD longer,
    split so that none exceeds `run_bytes` (what one GSO send carries; the
    connection sizes its runs so that one is enough:
    Config.datagram_overhead), for the connection ID the rows address.
    `train` goes back to the pool (its trailer room may hold the tails:
    `_seal_rows`). The whole step per train, compiled with the rest of
    this module: a bulk sender makes some 16,000 trains a GB at 1,472 bytes
    (docs/security.md, Performance)."""
    size = train.size
    total = len(train)
    sealed_size = size + OVERHEAD
    dst = int.from_bytes(train[4:8], "big")
    per_train = max(1, run_bytes // sealed_size) * size  # plaintext bytes per sealed train
    trains: list[Train] = []
    with memoryview(train) as view:
        for start in range(0, total, per_train):
            stop = min(start + per_train, total)
            rows = -(-(stop - start) // size)
            length = stop - start + OVERHEAD * rows
            out = _reuse(sealed_size, rows) if length == sealed_size * rows else None
            if out is None:
                out = Train(length)
                out.size = sealed_size
                out._parts = None
            with memoryview(out) as mv:
                sealer.seal_rows(view[start:stop], size, rows, mv, dst)
            trains.append(out)
    release(train)
    return trains


# In-order packet numbers a ReplayWindow counts before it shifts its bitmap.
_RUN_MAX: Final = 64


class ReplayWindow:
    """The highest packet number accepted and a bitmap of the REPLAY_WINDOW
    numbers below it (`bitmap`, bit i set: highest - i was accepted).

    Kept as `_bits` and `_run`: the `_run` numbers up to `highest` were all
    accepted, in order, and `_bits` is the bitmap as it stood below them
    (bit i: highest - _run - i). A packet in order, the common case, only
    counts in `_run`; the bitmap (a REPLAY_WINDOW-bit integer, which every
    shift copies) moves once per _RUN_MAX of them, or when a packet comes
    out of line."""

    __slots__ = ("highest", "_bits", "_run", "size", "_mask")

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        self.highest = -1
        self._bits = 0
        self._run = 0
        self.size = size
        self._mask = (1 << size) - 1

    @property
    def bitmap(self) -> int:
        run = self._run
        return ((self._bits << run) | ((1 << run) - 1)) & self._mask

    def check(self, pn: int) -> str | None:
        """Why `pn` must be refused ("replayed", "too old"), or None."""
        if pn > self.highest:
            return None
        offset = self.highest - pn
        if offset >= self.size:
            return "too old"
        run = self._run
        if offset < run or self._bits >> (offset - run) & 1:
            return "replayed"
        return None

    def _settle(self) -> None:
        """Move the run into the bitmap."""
        run = self._run
        if run:
            self._bits = ((self._bits << run) | ((1 << run) - 1)) & self._mask
            self._run = 0

    def record(self, pn: int) -> None:
        if pn == self.highest + 1 and self._run < _RUN_MAX:
            self._run += 1
            self.highest = pn
            return
        self._settle()
        if pn > self.highest:
            shift = pn - self.highest
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self.size else 1
            self.highest = pn
        else:
            self._bits |= 1 << (self.highest - pn)

    def record_run(self, first: int, count: int) -> None:
        """`record` of first, first + 1, ... (count numbers, all above the
        highest so far) at once."""
        last = first + count - 1
        if first == self.highest + 1 and self._run + count <= _RUN_MAX:
            self._run += count
            self.highest = last
            return
        self._settle()
        shift = last - self.highest
        ones = (1 << count) - 1
        self._bits = ((self._bits << shift) | ones) & self._mask if shift < self.size else ones & self._mask
        self.highest = last


class Opener:
    """The receiving half: opens datagrams of any generation the sender may
    still be using, refusing replays. Counts what it refused, by reason."""

    __slots__ = ("aead", "_secret", "_current", "_previous", "_next", "key_phase", "generation",
                 "_gen_start", "window", "dropped", "opened")

    def __init__(self, secret: bytes, aead: str) -> None:
        self.aead = aead
        self._secret = secret
        self._current = _derive_keys(secret, aead)
        self._previous: Keys | None = None
        self._next: tuple[bytes, Keys] | None = None
        self.key_phase = 0
        self.generation = 0
        self._gen_start = 0  # first packet number seen in the current generation
        self.window = ReplayWindow()
        self.dropped: dict[str, int] = {}
        self.opened = 0

    def _drop(self, reason: str) -> ProtectionError:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        return ProtectionError(reason)

    def packet_number(self, truncated: int) -> int:
        """The full packet number of a header's truncated one, from the
        largest this side has opened (RFC 9000 Appendix A.3)."""
        return decode_packet_number(self.window.highest, truncated)

    def open(self, header: bytes | memoryview, pn: int, key_phase: int,
             ciphertext: bytes | memoryview, out: memoryview | None = None) -> bytes | int:
        """The plaintext of a datagram whose header (as received, all of it
        authenticated) carried `key_phase` and packet number `pn` (the full
        number: `packet_number` of the header's); with `out`, written there
        and its length returned. Raises ProtectionError (and counts it) for
        anything that must be dropped."""
        window = self.window
        if pn <= window.highest:  # the common in-order case skips the check's call
            why = window.check(pn)
            if why is not None:
                raise self._drop(why)
        promote = False
        if key_phase == self.key_phase:
            # Even below the generation's first number seen: the same bit
            # two generations back lies update_interval (more than the
            # window) behind, and the window has refused it already.
            aead, iv, _ = self._current
        elif pn < self._gen_start:
            if self._previous is None:
                raise self._drop("old key discarded")
            aead, iv, _ = self._previous
        else:
            if self._next is None:
                secret = next_secret(self._secret)
                self._next = (secret, _derive_keys(secret, self.aead))
            aead, iv, _ = self._next[1]
            promote = True
        plaintext: bytes | int
        try:
            if out is None:
                plaintext = aead.decrypt((iv ^ pn).to_bytes(IV_SIZE, "big"), ciphertext, header)
            else:
                plaintext = aead.decrypt_into((iv ^ pn).to_bytes(IV_SIZE, "big"), ciphertext, header,
                                              out[: len(ciphertext) - TAG_SIZE])
        except InvalidTag:
            raise self._drop("does not authenticate") from None
        if promote:
            assert self._next is not None
            self._previous, self._current = self._current, self._next[1]
            self._secret, self._next = self._next[0], None
            self.key_phase ^= 1
            self.generation += 1
            self._gen_start = pn
        self.window.record(pn)
        self.opened += 1
        self._retire_previous()
        return plaintext

    def open_rows(self, buf: memoryview, seg: int, start: int, out: memoryview, pos: int,
                  dst_cid: int, trailers: bool = True) -> tuple[int, int, int, int]:
        """Open the rows of a batch (`seg` bytes each, the last maybe
        shorter) from row `start` into `out` at `pos`, each as its inner
        datagram and CRC trailer, for as long as they are the common case:
        sealed for `dst_cid` under the current key phase, packet numbers
        climbing by one from above the replay window (so the window need
        not be asked, and records them at once). Returns (the row it
        stopped at, the position after the last written, how many opened,
        why it stopped): at STOP_OTHER, `open` must judge that row (and the
        rows after it may be the common case again); at STOP_TAG, that row
        did not authenticate and was counted. Without `trailers` the CRC
        trailers are left unwritten, for a reader that does not check them
        (`Endpoint.receive_batch`'s `authenticated`)."""
        aead, iv, rows = self._current
        window = self.window
        if rows is not None and (seg if 0 < seg < len(buf) else len(buf)) <= NATIVE_ROW_MAX:
            # (declared: compiled, a typed tuple is read by index, where an
            # untyped one was unpacked through an iterator, item by item)
            answer: tuple[int, int, int, int, int] = rows.open_rows(buf, seg, start, out, pos, PROTECTED,
                                                                   self.key_phase, dst_cid, window.highest,
                                                                   trailers)
            row, pos, first, count, stop = answer
        else:
            row, pos, first, count, stop = _open_rows(aead, iv, buf, seg, start, out, pos, PROTECTED,
                                                      self.key_phase, dst_cid, window.highest, trailers)
        if count:
            window.record_run(first, count)
            self.opened += count
            if self._previous is not None:
                self._retire_previous()
        if stop == STOP_TAG:
            self._drop("does not authenticate")
        return row, pos, count, stop

    def open_datagram(self, datagram: bytes | bytearray | memoryview, out: bytearray, dst_cid: int,
                      trailers: bool = True) -> int:
        """`open_rows` of one datagram, into `out` at 0 (the inner datagram
        and its trailer's room fill len(datagram) - OVERHEAD bytes): why it
        stopped, STOP_END when it opened. One call of the rows primitive
        where it is built: the path of a small message or an ACK."""
        rows = self._current[2]
        if rows is None or len(datagram) > NATIVE_ROW_MAX:
            return int(self.open_rows(memoryview(datagram), 0, 0, memoryview(out), 0, dst_cid, trailers)[3])
        window = self.window
        pn: int = rows.open_datagram(datagram, out, self.key_phase, dst_cid, window.highest, trailers)
        if pn < 0:
            if pn == -1 - STOP_TAG:
                self._drop("does not authenticate")
                return STOP_TAG
            return STOP_OTHER
        window.record(pn)
        self.opened += 1
        if self._previous is not None:
            self._retire_previous()
        return STOP_END

    def _retire_previous(self) -> None:
        # The previous generation is needed only for packets the window can
        # still accept: once the window has moved past the first packet of
        # this generation, nothing from before it can open.
        if self._previous is not None and self.window.highest - self.window.size >= self._gen_start:
            self._previous = None
