"""CPU per GB of a sender's encoding and sendmsg alone, a run at a time:
the copy into a `Train` (encode_run, one buffer to sendmsg) beside the
gathered `SourceTrain` (encode_source, header, payload and trailer buffers
to one sendmsg), both as io/endpoint.py's `_send_train` sends them.

    python bench/gather_cost.py --size 65000      # path MTU discovery's datagrams
    python bench/gather_cost.py --size 1472       # 44-row GSO trains

The payloads come from a 4 MB buffer (the size of bench/compare.py's
pattern, so they are in the last-level cache, as a bulk sender's are), the
datagrams go over loopback to a socket with UDP GRO on (the kernel hands a
GSO train over whole, as to Gannet's receiver) and a small receive buffer,
so that nothing waits for a reader: what the kernel does with a datagram
it cannot queue costs the same for both ways. Each way runs in its own
process, alternating, `--rounds` times; user and system CPU seconds per GB
of payload are printed for each run.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import struct
import subprocess
import sys

SOL_UDP, UDP_SEGMENT, UDP_GRO = 17, 103, 104


def run(way: str, size: int, gib: float) -> None:
    from gannet.wire.batch import encode_run, encode_source, release
    from gannet.wire.datagram import DATA_OVERHEAD
    from gannet.wire.segment import ACK, SegmentRun

    mss = size - DATA_OVERHEAD
    rows = max(1, min(64, 65000 // size))
    length = rows * mss
    src = random.Random(1).randbytes(4 << 20)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    rx.setsockopt(SOL_UDP, UDP_GRO, 1)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = rx.getsockname()
    anc = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))] if rows > 1 else []
    total = int(gib * (1 << 30))
    done = off = 0
    start = os.times()
    while done < total:
        if off + length > len(src):
            off = 0
        r = SegmentRun(done & 0xFFFFFFFF, 1, ACK, ACK, 9, 9, 9, src, off, length, mss)
        if way == "train":
            train = encode_run(5, r)
            tx.sendmsg([train], anc, 0, addr)
            release(train)
        else:
            tx.sendmsg(encode_source(5, r).pieces(), anc, 0, addr)
        off += length
        done += length
    end = os.times()
    gb = done / 1e9
    print(f"{way:6s} {size} B x{rows}: user {(end.user - start.user) / gb:.3f} "
          f"sys {(end.system - start.system) / gb:.3f} CPU s/GB", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=65000, help="datagram size")
    p.add_argument("--gib", type=float, default=2.0, help="payload per run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--way", choices=["train", "source"], help=argparse.SUPPRESS)  # one run (internal)
    args = p.parse_args()
    if args.way:
        run(args.way, args.size, args.gib)
        return
    for _ in range(args.rounds):
        for way in ("train", "source"):
            subprocess.run([sys.executable, __file__, "--way", way, "--size", str(args.size),
                            "--gib", str(args.gib)], check=True)


if __name__ == "__main__":
    main()
