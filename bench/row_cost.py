"""Per-row cost of sealing and opening, by implementation (issue 13).

Seals and opens the rows of a train the way `Sealer.seal_rows` and
`Opener.open_rows` do, through each AEAD implementation the tree has,
alternating them round by round so that the machine's changes of speed
fall on both alike, and prints microseconds per row (median and best of the
rounds) for each size:

    python bench/row_cost.py                      # 1,472 and 65,000-byte sealed rows
    python bench/row_cost.py --sizes 1472 --rows 44 --rounds 9

Implementations: `c` (gannet.crypto._rows over the system's libcrypto, one
call per train) and `cryptography` (protection's `_seal_rows` / `_open_rows`,
compiled with the core: one `AESGCM.encrypt_into` / `decrypt_into` a row,
OpenSSL as the `cryptography` wheel carries it). Only the AEAD over the rows
is timed: which key, which packet numbers and the replay window are the same
Python for both.
"""

from __future__ import annotations

import argparse
import statistics
import time

from gannet.crypto import protection
from gannet.crypto.protection import OVERHEAD, _derive_keys, _open_rows, _rows, _seal_rows
from gannet.wire.protected import PROTECTED

DST = 0x01020304


def train(size: int, rows: int) -> bytearray:
    """`rows` plaintext short-form datagrams of `size` bytes, back to back."""
    row = bytearray(size)
    row[0] = 0x83  # the short form of version 3
    row[1] = 0x10  # ACK
    row[4:8] = DST.to_bytes(4, "big")
    for i in range(8, size):
        row[i] = i & 0xFF
    return row * rows


def run(impl: str, keys, src: bytearray, size: int, rows: int, reps: int) -> tuple[float, float]:
    """Microseconds per row sealed, and opened, over `reps` trains."""
    aead, iv, native = keys
    sealed = bytearray(len(src) + OVERHEAD * rows)
    opened = bytearray(len(sealed))
    mv_src, mv_sealed, mv_opened = memoryview(src), memoryview(sealed), memoryview(opened)
    seg = size + OVERHEAD
    pn = 0
    t0 = time.perf_counter()
    for _ in range(reps):
        if impl == "c":
            native.seal_rows(mv_src, size, mv_sealed, PROTECTED, 0, DST, pn, rows)
        else:
            _seal_rows(aead, iv, mv_src, size, mv_sealed, PROTECTED, 0, DST, pn, rows)
    t1 = time.perf_counter()
    for _ in range(reps):
        if impl == "c":
            r = native.open_rows(mv_sealed, seg, 0, mv_opened, 0, PROTECTED, 0, DST, pn - 1, False)
        else:
            r = _open_rows(aead, iv, mv_sealed, seg, 0, mv_opened, 0, PROTECTED, 0, DST, pn - 1, False)
        assert r[3] == rows and r[4] == 0, r
    t2 = time.perf_counter()
    n = reps * rows
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1472,65000", help="sealed row sizes (bytes on the wire)")
    ap.add_argument("--rows", type=int, default=0, help="rows per train (default: 44 below 2 KB, else 1)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--bytes", type=float, default=8e6, help="bytes per implementation and round")
    args = ap.parse_args()
    keys = _derive_keys(b"k" * 32, protection.AES_128_GCM)
    impls = ["c", "cryptography"] if _rows is not None else ["cryptography"]
    print(f"native rows: {'yes' if _rows is not None else 'no'}; "
          f"param path: {getattr(keys[2], 'param_path', '-')}")
    for sealed_size in (int(s) for s in args.sizes.split(",")):
        size = sealed_size - OVERHEAD
        rows = args.rows or (44 if sealed_size <= 2048 else 1)
        src = train(size, rows)
        reps = max(1, int(args.bytes / (sealed_size * rows)))
        results: dict[str, list[tuple[float, float]]] = {i: [] for i in impls}
        for impl in impls:
            run(impl, keys, src, size, rows, max(1, reps // 10))  # warm
        for _ in range(args.rounds):
            for impl in impls:
                results[impl].append(run(impl, keys, src, size, rows, reps))
        for impl in impls:
            seal = [s for s, _ in results[impl]]
            open_ = [o for _, o in results[impl]]
            print(f"{sealed_size:>6} B x {rows:>2} rows  {impl:<12} "
                  f"seal {statistics.median(seal):7.3f} us/row (best {min(seal):.3f})  "
                  f"open {statistics.median(open_):7.3f} (best {min(open_):.3f})  "
                  f"= {sealed_size / statistics.median(seal) / 1e3:.2f} / "
                  f"{sealed_size / statistics.median(open_) / 1e3:.2f} GB/s")


if __name__ == "__main__":
    main()
