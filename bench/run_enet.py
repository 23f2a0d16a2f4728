"""ENet runner: `pyenet` (Cython binding of the ENet C library), reliable packets.

The bulk stream goes as 64 KB reliable packets on one channel (ENet
fragments them to its MTU).  ENet queues without limit, so the receiver
returns an 8-byte running byte count every CREDIT bytes and the sender keeps
at most WINDOW bytes unconfirmed - application-level flow control that
keeps memory bounded without limiting loopback throughput.
"""

from __future__ import annotations

import struct
import sys
import time

import common as c

try:
    import enet
except ImportError as e:  # reported as "not available"
    enet = None
    IMPORT_ERROR = str(e)

MSG = 64 * 1024
CREDIT = 2 << 20
WINDOW = 16 << 20


def server(args) -> None:
    host = enet.Host(enet.Address(args.host.encode(), args.port), 1, 1, 0, 0)
    c.ready(host.address.port)
    bulk = args.workload == "bulk"
    rx = c.BulkReceiver(args.bytes)
    echoed = 0
    credited = 0
    deadline = time.monotonic() + 150
    peer = None
    while time.monotonic() < deadline:
        ev = host.service(100)
        if ev.type == enet.EVENT_TYPE_NONE:
            continue
        if ev.type == enet.EVENT_TYPE_CONNECT:
            peer = ev.peer
        elif ev.type == enet.EVENT_TYPE_DISCONNECT:
            break
        elif ev.type == enet.EVENT_TYPE_RECEIVE:
            data = ev.packet.data
            if bulk:
                rx.feed(data)
                if rx.nbytes - credited >= CREDIT or rx.done:
                    credited = rx.nbytes
                    peer.send(0, enet.Packet(struct.pack("!Q", credited),
                                             enet.PACKET_FLAG_RELIABLE))
            else:
                peer.send(0, enet.Packet(data, enet.PACKET_FLAG_RELIABLE))
                host.flush()
                echoed += 1
    c.emit(rx.result() if bulk else {"echoed": echoed})


def connect(args):
    host = enet.Host(None, 1, 1, 0, 0)
    peer = host.connect(enet.Address(args.host.encode(), args.port), 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ev = host.service(100)
        if ev.type == enet.EVENT_TYPE_CONNECT:
            return host, peer
    raise TimeoutError("ENet connect timed out")


def close(host, peer) -> None:
    peer.disconnect()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if host.service(50).type == enet.EVENT_TYPE_DISCONNECT:
            return


def client(args) -> None:
    host, peer = connect(args)
    deadline = time.monotonic() + 150
    if args.workload == "bulk":
        tx = c.BulkSender(args, chunk=MSG)
        chunks = tx.chunks()
        confirmed, pending = 0, True
        while time.monotonic() < deadline:
            while pending and tx.sent - confirmed < WINDOW:
                chunk = next(chunks, None)
                if chunk is None:
                    pending = False
                    break
                peer.send(0, enet.Packet(bytes(chunk), enet.PACKET_FLAG_RELIABLE))
            host.flush()
            # block (1 ms at most) only while the window is full
            ev = host.service(1 if not pending or tx.sent - confirmed >= WINDOW else 0)
            while ev is not None and ev.type != enet.EVENT_TYPE_NONE:
                if ev.type == enet.EVENT_TYPE_RECEIVE:
                    confirmed = struct.unpack("!Q", ev.packet.data)[0]
                elif ev.type == enet.EVENT_TYPE_DISCONNECT:
                    pending = False
                    confirmed = tx.sent
                ev = host.check_events()
            if not pending and confirmed >= tx.sent:
                break
        res = tx.result(confirmed=confirmed)
        close(host, peer)
        c.emit(res)
        return
    pattern, size = c.Pattern(), args.size
    samples, bad = [], 0
    meter = c.Meter()
    meter.start()
    for i in range(args.count):
        msg = c.pingpong_message(pattern, i, size)
        t0 = time.perf_counter_ns()
        peer.send(0, enet.Packet(bytes(msg), enet.PACKET_FLAG_RELIABLE))
        host.flush()
        reply = None
        while reply is None and time.monotonic() < deadline:
            ev = host.service(1)
            if ev.type == enet.EVENT_TYPE_RECEIVE:
                reply = ev.packet.data
        if reply is None:
            break
        samples.append(time.perf_counter_ns() - t0)
        bad += reply != msg
    meter.stop()
    close(host, peer)
    c.emit({"rtts": len(samples), "bad_echoes": bad, **c.percentiles(samples),
            **meter.as_dict()})


def main(argv=None) -> None:
    args = c.parser(__doc__).parse_args(argv)
    if enet is None:
        c.unavailable(f"pyenet not installed ({IMPORT_ERROR}); "
                      "pip install -r bench/requirements.txt")
    c.dispatch(args, server, client)


if __name__ == "__main__":
    main(sys.argv[1:])
