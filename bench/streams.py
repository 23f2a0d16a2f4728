"""Workloads over asyncio-shaped streams ``(reader, writer)``.

Used by the runners whose transport offers asyncio-style streams (aioquic,
Gannet).  The reader needs ``read(n)`` and ``readexactly(n)``; the writer
``write``, ``drain``, ``write_eof`` and ``close``, as asyncio's do.
"""

from __future__ import annotations

import asyncio
import inspect
import time

import common as c

READ = 1 << 20


async def maybe_await(x):
    return await x if inspect.isawaitable(x) else x


async def close_writer(writer) -> None:
    try:
        writer.close()
        if hasattr(writer, "wait_closed"):
            await asyncio.wait_for(maybe_await(writer.wait_closed()), 2.0)
    except Exception:  # closing is best effort at the end of a run
        pass


async def serve_connection(reader, writer, args) -> dict:
    """Server side of one connection: receive the bulk stream, or echo."""
    if args.workload == "bulk":
        rx = c.BulkReceiver(args.bytes)
        while True:
            data = await reader.read(READ)
            if not data:
                break
            rx.feed(data)
        res = rx.result()
        writer.write(b"k")  # the client waits for this before it closes
        await writer.drain()
    else:
        echoed = 0
        while True:
            try:
                msg = await reader.readexactly(args.size)
            except asyncio.IncompleteReadError:
                break
            writer.write(msg)
            await writer.drain()
            echoed += 1
        res = {"echoed": echoed}
    await close_writer(writer)
    return res


BACKLOG_LIMIT = 4 << 20


async def run_client(reader, writer, args, backlog=None) -> dict:
    """Client side: send the bulk stream, or time the ping-pong round trips.

    ``backlog``, for a transport whose ``drain`` never pushes back, returns
    the bytes written but not yet acknowledged; the sender waits while it is
    above BACKLOG_LIMIT, so a time limit stops the stream in time.
    """
    if args.workload == "bulk":
        tx = c.BulkSender(args)
        for chunk in tx.chunks():
            # A read-only view of the immutable pattern, as run_tcp hands
            # it to sendall: a transport that must keep the bytes copies
            # them itself, as it would for any caller.
            writer.write(chunk)
            await writer.drain()
            while backlog is not None and backlog() > BACKLOG_LIMIT:
                await asyncio.sleep(0.0005)
        if writer.can_write_eof() if hasattr(writer, "can_write_eof") else True:
            writer.write_eof()
        await reader.read(1)  # the server's confirmation that it has everything
        res = tx.result()  # so the sender's CPU window covers the whole transfer
        await close_writer(writer)
        return res
    pattern, size = c.Pattern(), args.size
    samples, bad = [], 0
    meter = c.Meter()
    meter.start()
    for i in range(args.count):
        msg = bytes(c.pingpong_message(pattern, i, size))
        t0 = time.perf_counter_ns()
        writer.write(msg)
        await writer.drain()
        reply = await reader.readexactly(size)
        samples.append(time.perf_counter_ns() - t0)
        bad += reply != msg
    meter.stop()
    writer.write_eof()
    await close_writer(writer)
    return {"rtts": len(samples), "bad_echoes": bad, **c.percentiles(samples),
            **meter.as_dict()}


def pick_loop(use_uvloop: bool):
    """(name, loop_factory): uvloop when asked for and installed, else asyncio's."""
    if use_uvloop:
        try:
            import uvloop

            return "uvloop", uvloop.new_event_loop
        except ImportError:
            pass
    return "asyncio", None


def run(coro_factory, loop_factory) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(coro_factory())
