"""Many connections: one Gannet server against one kernel-TCP asyncio server.

For each transport, in one run, on loopback:

1. a server process starts (``gannet.start_server`` or ``asyncio.start_server``,
   the same echo handler) and reports its baseline memory;
2. a client process opens ``--connections`` connections (default 10,000),
   at most ``--concurrency`` handshakes at a time, each with keep-alive on
   and each doing one small echo that is verified;
3. once every connection is open and idle, the server reports its memory
   (after ``gc.collect()``): RSS, Python allocated blocks, GC objects;
4. the connections are held for ``--hold`` seconds with a short keep-alive
   (``--keepalive-idle``), so probes really flow; the server's CPU and
   datagram (segment) counts are read at both ends of the hold, and every
   connection must still be alive at its end;
5. the client does a final verified echo on every connection, closes them
   all, and the server confirms they are gone.

Accept rate: connections the server's handler saw per second, from the first
to the last (the ramp). Memory per idle connection: the server process's RSS
growth over the ramp divided by the connection count, plus, for kernel TCP,
the kernel's share: the growth of the socket slab caches (TCP, inode, dentry,
file, epoll item, ...) and of the TCP buffer pages in /proc/net/sockstat,
halved because both ends of each loopback connection are kernel sockets and
only one of them is the server's. Gannet's server has one UDP socket whatever
the count, so its kernel share is zero (the measured delta is reported too).

    python bench/scale.py                         # 10,000 connections, both transports
    python bench/scale.py -n 1000 --hold 6 --keepalive-idle 2
    python bench/scale.py --transports gannet --tracemalloc --json out.json

Exit status: 0 when every connection of every transport was established,
held, and echoed correctly twice; 1 otherwise. The 2x targets are reported,
not enforced.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import queue
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common import cpu_seconds, machine_info

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"
PAGE = os.sysconf("SC_PAGE_SIZE")
TRANSPORTS = ("gannet", "tcp")
LABELS = {"gannet": "Gannet", "tcp": "kernel TCP"}
# Slab caches an idle IPv4 TCP socket held by an asyncio process occupies.
SOCKET_SLABS = ("TCP", "sock_inode_cache", "dentry", "filp", "eventpoll_epi",
                "eventpoll_pwq", "skbuff_head_cache", "skbuff_small_head",
                "request_sock_TCP", "tw_sock_TCP")
TCP_INFO_SEGS = struct.Struct("=II")  # tcpi_segs_out, tcpi_segs_in
TCP_INFO_SEGS_AT = 136  # their offset in struct tcp_info (Linux 4.2+)


# ------------------------------------------------------------------ helpers


def raise_nofile(want: int) -> int:
    """Lift RLIMIT_NOFILE to at least `want` where allowed; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        try:  # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_status() -> dict[str, int]:
    """VmRSS / RssAnon of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def kernel_memory() -> dict[str, Any]:
    """Kernel memory that grows with TCP sockets: slab caches and TCP buffer pages."""
    out: dict[str, Any] = {"slab": {}, "tcp_mem_pages": 0, "udp_mem_pages": 0, "tcp_inuse": 0}
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in SOCKET_SLABS:
                    out["slab"][parts[0]] = int(parts[1]) * int(parts[3])  # active objs x size
    except OSError:  # not root: /proc/slabinfo is 0400
        out["slab"] = None
    try:
        with open("/proc/net/sockstat") as f:
            for line in f:
                parts = line.split()
                if parts[:1] == ["TCP:"]:
                    fields = dict(zip(parts[1::2], parts[2::2]))
                    out["tcp_mem_pages"] = int(fields.get("mem", 0))
                    out["tcp_inuse"] = int(fields.get("inuse", 0))
                elif parts[:1] == ["UDP:"]:
                    fields = dict(zip(parts[1::2], parts[2::2]))
                    out["udp_mem_pages"] = int(fields.get("mem", 0))
    except OSError:
        pass
    return out


def kernel_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {
        "tcp_mem_bytes": (after["tcp_mem_pages"] - before["tcp_mem_pages"]) * PAGE,
        "udp_mem_bytes": (after["udp_mem_pages"] - before["udp_mem_pages"]) * PAGE,
        "tcp_inuse": after["tcp_inuse"] - before["tcp_inuse"],
    }
    if before["slab"] is None or after["slab"] is None:
        d["slab_bytes"] = None
        d["slab"] = None
    else:
        names = set(before["slab"]) | set(after["slab"])
        d["slab"] = {n: after["slab"].get(n, 0) - before["slab"].get(n, 0) for n in sorted(names)}
        d["slab_bytes"] = sum(d["slab"].values())
    return d


def keepalive_config(args) -> dict[str, Any]:
    return {"keepalive": True, "keepalive_idle": float(args.keepalive_idle),
            "keepalive_interval": float(args.keepalive_interval),
            "keepalive_count": args.keepalive_count}


def tcp_keepalive(sock: socket.socket, args) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle, interval = max(1, round(args.keepalive_idle)), max(1, round(args.keepalive_interval))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, args.keepalive_count)


def tcp_segments(socks) -> int | None:
    """Segments sent plus received over these TCP sockets (tcp_info counters)."""
    total = 0
    for s in socks:
        try:
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        except OSError:
            continue
        if len(info) < TCP_INFO_SEGS_AT + 8:
            return None
        out, inn = TCP_INFO_SEGS.unpack_from(info, TCP_INFO_SEGS_AT)
        total += out + inn
    return total


def control_lines(loop: asyncio.AbstractEventLoop, handle) -> None:
    """Feed stdin lines to `handle` on the loop (the orchestrator's commands)."""

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(handle, line.strip())
        loop.call_soon_threadsafe(handle, "quit")

    threading.Thread(target=pump, daemon=True).start()


def say(kind: str, payload: dict[str, Any]) -> None:
    print(f"{kind} {json.dumps(payload)}", flush=True)


# ------------------------------------------------------------------ server


class ServerState:
    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.accepted = 0
        self.alive = 0
        self.ended = 0
        self.errors = 0
        self.t_first = 0.0
        self.t_last = 0.0
        self.tcp_socks: set[socket.socket] = set()
        self.aep = None  # Gannet's AioEndpoint


async def run_server(args) -> None:
    raise_nofile(args.connections + 1024)
    st = ServerState(args.transport)
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(args.tracemalloc)
    gc_time = [0.0, 0.0]  # seconds in the cyclic collector, start of the current pass
    gc_by_gen = [0.0, 0.0, 0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_time[1] = time.perf_counter()
        else:
            spent = time.perf_counter() - gc_time[1]
            gc_time[0] += spent
            gc_by_gen[info["generation"]] += spent

    gc.callbacks.append(on_gc)

    async def echo(reader, writer) -> None:
        now = time.monotonic()
        if not st.accepted:
            st.t_first = now
        st.t_last = now
        st.accepted += 1
        st.alive += 1
        sock = None
        if st.transport == "tcp":
            sock = writer.get_extra_info("socket")
            tcp_keepalive(sock, args)
            st.tcp_socks.add(sock)
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                writer.write(data)
        except (ConnectionError, TimeoutError, OSError):
            st.errors += 1
        finally:
            st.alive -= 1
            st.ended += 1
            if sock is not None:
                st.tcp_socks.discard(sock)
            writer.close()

    if args.transport == "gannet":
        import gannet

        cfg = gannet.Config(backlog=args.backlog, **keepalive_config(args))
        server = await gannet.start_server(echo, HOST, 0, config=cfg, backlog=args.backlog)
        st.aep = server.endpoint
        port = server.addresses[0][1]
    else:
        server = await asyncio.start_server(echo, HOST, 0, backlog=args.backlog)
        port = server.sockets[0].getsockname()[1]

    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def stats(collect: bool) -> dict[str, Any]:
        t0, c0 = time.monotonic(), cpu_seconds()
        out: dict[str, Any] = {"t_before": t0, "cpu_before": c0, "gc_seconds": gc_time[0],
                               "gc_seconds_by_generation": list(gc_by_gen)}
        if st.aep is not None:
            io = st.aep.io_stats
            out["datagrams"] = io.datagrams_sent + io.datagrams_received
        else:
            out["datagrams"] = tcp_segments(list(st.tcp_socks))
        if args.profile and collect and st.accepted:
            profiler.disable()  # the ramp is over
            profiler.dump_stats(args.profile)
        if collect:
            gc.collect()
            out["gc_objects"] = len(gc.get_objects())
            if args.tracemalloc:
                import tracemalloc

                snap = tracemalloc.take_snapshot()
                top = snap.statistics("lineno")
                out["tracemalloc_total"] = sum(s.size for s in top)
                out["tracemalloc_top"] = [
                    {"where": str(s.traceback[0]), "size": s.size, "count": s.count}
                    for s in top[:25]
                ]
        out.update(proc_status())
        out.update(gc_collections=[g["collections"] for g in gc.get_stats()],
                   blocks=sys.getallocatedblocks(), accepted=st.accepted, alive=st.alive,
                   ended=st.ended, errors=st.errors, t_first=st.t_first, t_last=st.t_last,
                   t_after=time.monotonic(), cpu_after=cpu_seconds())
        if st.aep is not None:
            out["endpoint"] = st.aep.ep.stats.as_dict()
            out["io"] = dataclasses.asdict(st.aep.io_stats)
        return out

    def handle(cmd: str) -> None:
        if cmd.startswith("stats"):
            say("STATS", stats("gc" in cmd.split()[1:]))
        elif cmd == "quit" and not done.done():
            done.set_result(None)

    control_lines(loop, handle)
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    say("READY", {"port": port, "pid": os.getpid()})
    await done
    server.close()


# ------------------------------------------------------------------ client


async def run_client(args) -> None:
    raise_nofile(args.count + 1024)
    loop = asyncio.get_running_loop()
    final = loop.create_future()
    quit_ = loop.create_future()

    def handle(cmd: str) -> None:
        fut = final if cmd == "final" else quit_ if cmd == "quit" else None
        if fut is not None and not fut.done():
            fut.set_result(None)

    control_lines(loop, handle)
    addr = (HOST, args.port)
    if args.transport == "gannet":
        import gannet
        from gannet.io.aio import connect_endpoint
        from gannet.io.endpoint import AioEndpoint, create_endpoint, make_udp_socket

        cfg = gannet.Config(**keepalive_config(args))
        if args.sockets:
            endpoints = [await create_endpoint(HOST, 0, config=cfg) for _ in range(args.sockets)]

        async def open_one(i: int):
            if not args.sockets:  # one UDP socket per connection, as separate clients have
                aep = AioEndpoint(make_udp_socket(socket.AF_INET, (HOST, 0)), cfg, loop)
                aep.close_when_idle = True
                return await connect_endpoint(aep, addr, cfg)
            return await connect_endpoint(endpoints[i % len(endpoints)], addr, cfg)
    else:
        async def open_one(i: int):
            reader, writer = await asyncio.open_connection(HOST, args.port)
            tcp_keepalive(writer.get_extra_info("socket"), args)
            return reader, writer

    conns: list[Any] = [None] * args.count
    errors: list[str] = []
    limit = args.op_timeout

    async def pool(fn) -> list[bool]:
        """fn(i) for every connection, `--concurrency` at a time (one worker
        task each, not one task per connection: the harness stays cheap)."""
        todo = iter(range(args.count))
        done = [False] * args.count

        async def worker() -> None:
            for i in todo:
                done[i] = await fn(i)

        await asyncio.gather(*(worker() for _ in range(min(args.concurrency, args.count))))
        return done

    async def echo(i: int, tag: bytes) -> bool:
        reader, writer = conns[i]
        msg = b"%s %d %d\n" % (tag, args.offset + i, args.offset * 7919 + i)
        writer.write(msg)
        return await reader.readexactly(len(msg)) == msg

    async def first(i: int) -> bool:
        try:
            async with asyncio.timeout(limit):
                conns[i] = await open_one(i)
                return await echo(i, b"hello")
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            if len(errors) < 20:
                errors.append(f"open {i}: {exc!r}")
            return False

    t0, c0 = time.monotonic(), cpu_seconds()
    ok = await pool(first)
    t1, c1 = time.monotonic(), cpu_seconds()
    opened = sum(c is not None for c in conns)
    say("OPENED", {"opened": opened, "echo_ok": sum(ok), "t_start": t0, "t_end": t1,
                   "cpu": c1 - c0, "errors": errors[:10]})
    await asyncio.wait([final, quit_], return_when=asyncio.FIRST_COMPLETED)

    final_ok = 0
    t1f = time.monotonic()
    if final.done():
        async def last(i: int) -> bool:
            if conns[i] is None:
                return False
            try:
                async with asyncio.timeout(limit):
                    return await echo(i, b"final")
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                if len(errors) < 20:
                    errors.append(f"final {i}: {exc!r}")
                return False

        final_ok = sum(await pool(last))

    async def close(i: int) -> bool:
        if conns[i] is None:
            return False
        writer = conns[i][1]
        writer.close()
        try:
            async with asyncio.timeout(limit):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            pass
        return True

    t2 = time.monotonic()
    await pool(close)
    say("RESULT", {"opened": opened, "echo_ok": sum(ok), "final_ok": final_ok,
                   "final_seconds": t2 - t1f, "close_seconds": time.monotonic() - t2,
                   "errors": errors[:10]})


# ------------------------------------------------------------ orchestrator


class Proc:
    """A child process driven over stdin, reporting `KIND json` lines on stdout."""

    def __init__(self, argv: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env,
                                  start_new_session=True)
        self.msgs: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._err, daemon=True).start()

    def _out(self) -> None:
        for line in self.p.stdout:
            kind, _, rest = line.partition(" ")
            try:
                self.msgs.put((kind, json.loads(rest)))
            except ValueError:
                self.stderr.append("stdout: " + line)
        self.msgs.put(None)

    def _err(self) -> None:
        for line in self.p.stderr:
            self.stderr.append(line)
            del self.stderr[:-40]

    def send(self, cmd: str) -> None:
        try:
            self.p.stdin.write(cmd + "\n")
            self.p.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def expect(self, kind: str, deadline: float) -> dict[str, Any]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"timed out waiting for {kind}")
            try:
                msg = self.msgs.get(timeout=left)
            except queue.Empty:
                raise RuntimeError(f"timed out waiting for {kind}") from None
            if msg is None:
                raise RuntimeError(f"process exited before {kind}: {self.tail()}")
            if msg[0] == kind:
                return msg[1]

    def tail(self) -> str:
        return "".join(self.stderr[-8:]).strip() or f"exit status {self.p.poll()}"

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            try:
                self.p.wait(2)
            except subprocess.TimeoutExpired:
                pass
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait(5)


def child_argv(role: str, transport: str, args, **extra: Any) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--role", role,
            "--transport", transport, "--connections", str(args.connections),
            "--keepalive-idle", str(args.keepalive_idle),
            "--keepalive-interval", str(args.keepalive_interval),
            "--keepalive-count", str(args.keepalive_count),
            "--backlog", str(args.backlog), "--concurrency", str(args.concurrency),
            "--op-timeout", str(args.op_timeout), "--sockets", str(args.sockets)]
    for key, value in extra.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    return argv


def delta(after: list, before: list) -> list:
    return [a - b for a, b in zip(after, before)]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_transport(transport: str, args) -> dict[str, Any]:
    """One full run: server, clients, ramp, idle, hold, final echo, close."""
    n = args.connections
    deadline = time.monotonic() + args.timeout
    res: dict[str, Any] = {"transport": transport, "label": LABELS[transport], "connections": n}
    procs: list[Proc] = []
    try:
        kern0 = kernel_memory()
        srv = Proc(child_argv("server", transport, args,
                              tracemalloc=args.tracemalloc if transport == "gannet" else 0,
                              **({"profile": args.profile} if args.profile and transport == "gannet"
                                 else {})))
        procs.append(srv)
        port = srv.expect("READY", min(deadline, time.monotonic() + 30))["port"]
        time.sleep(0.3)
        srv.send("stats gc")
        base = srv.expect("STATS", deadline)

        k = args.clients
        shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
        clients, offset = [], 0
        for count in shares:
            clients.append(Proc(child_argv("client", transport, args, port=port, count=count,
                                           offset=offset)))
            offset += count
        procs += clients
        log(f"{LABELS[transport]}: opening {n} connections ...")
        opened = [c.expect("OPENED", deadline) for c in clients]
        time.sleep(args.settle)
        kern1 = kernel_memory()
        srv.send("stats gc")
        idle = srv.expect("STATS", deadline)
        log(f"{LABELS[transport]}: {idle['alive']} connections open; holding {args.hold:g} s")
        time.sleep(args.hold)
        srv.send("stats")
        held = srv.expect("STATS", deadline)
        for c in clients:
            c.send("final")
        finals = [c.expect("RESULT", deadline) for c in clients]
        time.sleep(0.2)
        srv.send("stats")
        after = srv.expect("STATS", deadline)
    except RuntimeError as exc:
        res["error"] = str(exc)
        res["server_stderr"] = procs[0].tail() if procs else ""
        return res
    finally:
        for p in procs:
            p.stop()

    kd = kernel_delta(kern0, kern1)
    ramp = idle["t_last"] - idle["t_first"]
    rss = idle["VmRSS"] - base["VmRSS"]
    kernel_share: float | None = 0.0
    if transport == "tcp" and kd["slab_bytes"] is not None:
        kernel_share = (kd["slab_bytes"] + kd["tcp_mem_bytes"]) / 2
        if kernel_share <= 0:
            # The slabs are system-wide: when other processes free more
            # sockets during the ramp than ours allocate, the growth says
            # nothing about ours. Report it as not measured, never as a
            # negative (or zero) cost.
            res["kernel_note"] = (f"system-wide socket slabs grew by {kernel_share:,.0f} B "
                                  "during the ramp (other processes freed sockets): "
                                  "the kernel's share was not measured")
            kernel_share = None
    hold_s = held["t_before"] - idle["t_after"]
    dgrams = (held["datagrams"] - idle["datagrams"]) if held["datagrams"] is not None else None
    res.update({
        "opened": sum(o["opened"] for o in opened),
        "first_echo_ok": sum(o["echo_ok"] for o in opened),
        "final_echo_ok": sum(f["final_ok"] for f in finals),
        "client_errors": [e for o in opened + finals for e in o["errors"]][:10],
        "final_echo_seconds": max(f["final_seconds"] for f in finals),
        "close_seconds": max(f["close_seconds"] for f in finals),
        "accepted": idle["accepted"],
        "held": held["alive"],
        "died_during_hold": held["ended"] - idle["ended"],
        "open_after_close": after["alive"],
        "ramp_seconds": ramp,
        "client_ramp_seconds": max(o["t_end"] for o in opened) - min(o["t_start"] for o in opened),
        "accept_rate": (idle["accepted"] - 1) / ramp if ramp > 0 else None,
        "server_cpu_per_accept_ms": 1e3 * (idle["cpu_before"] - base["cpu_after"]) / n,
        "server_datagrams_per_accept": (idle["datagrams"] - (base["datagrams"] or 0)) / n
        if idle["datagrams"] is not None else None,
        "accept_capacity": n / (idle["cpu_before"] - base["cpu_after"])
        if idle["cpu_before"] > base["cpu_after"] else None,
        "server_gc_ms_per_accept": 1e3 * (idle["gc_seconds"] - base["gc_seconds"]) / n,
        "server_gc_collections": delta(idle["gc_collections"], base["gc_collections"]),
        "server_gc_seconds_by_generation": delta(idle["gc_seconds_by_generation"],
                                                 base["gc_seconds_by_generation"]),
        "client_cpu_per_open_ms": 1e3 * sum(o["cpu"] for o in opened) / n,
        "server_rss_base": base["VmRSS"],
        "server_rss_idle": idle["VmRSS"],
        "server_rss_per_conn": rss / n,
        "python_blocks_per_conn": (idle["blocks"] - base["blocks"]) / n,
        "gc_objects_per_conn": (idle["gc_objects"] - base["gc_objects"]) / n,
        "kernel_delta": kd,
        "kernel_per_conn": kernel_share / n if kernel_share is not None else None,
        "memory_per_conn": (rss + kernel_share) / n if kernel_share is not None else None,
        "hold_seconds": hold_s,
        "keepalive_datagrams_per_s": dgrams / hold_s if dgrams is not None and hold_s > 0 else None,
        "idle_cpu_percent": 100 * (held["cpu_before"] - idle["cpu_after"]) / hold_s
        if hold_s > 0 else None,
    })
    if "endpoint" in idle:
        res["server_endpoint_stats"] = idle["endpoint"]
        res["server_io_stats"] = idle["io"]
    if "tracemalloc_top" in idle:
        res["tracemalloc_total_per_conn"] = idle["tracemalloc_total"] / n
        res["tracemalloc_top"] = idle["tracemalloc_top"]
    res["ok"] = (res["opened"] == n and res["first_echo_ok"] == n and res["final_echo_ok"] == n
                 and res["held"] == n and res["died_during_hold"] == 0)
    return res


ROWS = [  # (label, result key, format, whether a Gannet / kernel ratio means anything)
    ("connections held", "held", "{:,.0f}", True),
    ("echo verified (open / final)", None, None, False),
    ("died during hold", "died_during_hold", "{:,.0f}", False),
    ("accept rate (conn/s)", "accept_rate", "{:,.0f}", True),
    ("ramp (s, at the server)", "ramp_seconds", "{:.2f}", True),
    ("  server CPU per accept (ms)", "server_cpu_per_accept_ms", "{:.3f}", True),
    ("  accept capacity (1 / CPU per accept)", "accept_capacity", "{:,.0f}", True),
    ("  server datagrams per accept", "server_datagrams_per_accept", "{:.1f}", True),
    ("  server cyclic GC per accept (ms)", "server_gc_ms_per_accept", "{:.3f}", True),
    ("  client CPU per open (ms)", "client_cpu_per_open_ms", "{:.3f}", True),
    ("memory per idle conn (B)", "memory_per_conn", "{:,.0f}", True),
    ("  server RSS per conn (B)", "server_rss_per_conn", "{:,.0f}", True),
    ("  kernel per conn (B)", "kernel_per_conn", "{:,.0f}", False),
    ("  Python blocks per conn", "python_blocks_per_conn", "{:,.1f}", True),
    ("  GC objects per conn", "gc_objects_per_conn", "{:,.1f}", True),
    ("keep-alive datagrams/s at server", "keepalive_datagrams_per_s", "{:,.0f}", True),
    ("server CPU while idle (% core)", "idle_cpu_percent", "{:.1f}", False),  # kernel: ~0
]


def table(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    names = [t for t in TRANSPORTS if t in results]
    header = ["metric"] + [LABELS[t] for t in names]
    both = "gannet" in results and "tcp" in results
    if both:
        header.append("Gannet / kernel")
    rows = []
    for label, key, fmt, ratio in ROWS:
        row = [label]
        for t in names:
            r = results[t]
            if key is None:
                row.append(f"{r.get('first_echo_ok', 0):,} / {r.get('final_echo_ok', 0):,}"
                           if "error" not in r else "error")
                continue
            v = r.get(key)
            row.append(fmt.format(v) if isinstance(v, (int, float)) else "-")
        if both:
            g = results["gannet"].get(key) if key and ratio else None
            k = results["tcp"].get(key) if key else None
            ok = isinstance(g, (int, float)) and isinstance(k, (int, float)) and k
            row.append(f"{g / k:.2f}" if ok else "-")
        rows.append(row)
    return header, rows


def verdict(results: dict[str, dict[str, Any]]) -> list[str]:
    if "gannet" not in results or "tcp" not in results:
        return []
    g, k = results["gannet"], results["tcp"]
    out = []
    if g.get("accept_rate") and k.get("accept_rate"):
        r = g["accept_rate"] / k["accept_rate"]
        out.append(f"accept rate: Gannet is {r:.2f}x kernel TCP "
                   f"({'within' if r >= 0.5 else 'NOT within'} 2x)")
    if g.get("accept_capacity") and k.get("accept_capacity"):
        r = g["accept_capacity"] / k["accept_capacity"]
        out.append(f"accept capacity (server CPU per accept): Gannet is {r:.2f}x kernel TCP "
                   f"({'within' if r >= 0.5 else 'NOT within'} 2x)")
    if g.get("memory_per_conn") and k.get("memory_per_conn"):
        r = g["memory_per_conn"] / k["memory_per_conn"]
        out.append(f"memory per idle connection: Gannet is {r:.2f}x kernel TCP "
                   f"({'within' if r <= 2 else 'NOT within'} 2x)")
    for name, r in (("Gannet", g), ("kernel TCP", k)):
        if r.get("kernel_note"):
            out.append(f"memory per idle connection of {name} not compared: {r['kernel_note']}")
    return out


def markdown(results, info, command) -> str:
    header, rows = table(results)
    out = [f"Command: `{command}`", "", machine_line(info), "",
           "| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out += [""] + [f"- {v}" for v in verdict(results)]
    for t, r in results.items():
        if r.get("error"):
            out.append(f"- {t}: ERROR {r['error']}")
    return "\n".join(out) + "\n"


def machine_line(info) -> str:
    return (f"Machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}, "
            f"Python {info['python']}, load average at start "
            f"{' / '.join(f'{x:.2f}' for x in info['loadavg'])}")


def print_table(results, info, command, args) -> None:
    header, rows = table(results)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a project dependency
        print(markdown(results, info, command))
        return
    console = Console() if sys.stdout.isatty() else Console(width=140)
    t = Table(title=f"Many connections: {args.connections:,} on loopback, keep-alive idle "
                    f"{args.keepalive_idle:g} s, held {args.hold:g} s",
              caption="memory = server RSS growth / N (+ kernel socket memory / 2N for TCP)")
    for i, col in enumerate(header):
        t.add_column(col, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*r)
    console.print(t)
    for line in verdict(results):
        console.print("  " + line, markup=False, highlight=False)
    for name, r in results.items():
        if r.get("error"):
            console.print(f"  {name}: ERROR {r['error']}", markup=False, highlight=False)
        elif not r.get("ok"):
            console.print(f"  {name}: NOT ALL CONNECTIONS HELD/VERIFIED "
                          f"{r.get('client_errors')}", markup=False, highlight=False)
    console.print("  " + machine_line(info), markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--connections", type=int, default=10_000)
    p.add_argument("--transports", default="gannet,tcp", help="comma-separated: gannet, tcp")
    p.add_argument("--clients", type=int, default=1, help="client processes")
    p.add_argument("--sockets", type=int, default=0,
                   help="UDP sockets per Gannet client process, connections spread over them "
                        "(0: one per connection, as separate clients would have)")
    p.add_argument("--concurrency", type=int, default=200,
                   help="handshakes (and later echoes, closes) in flight per client")
    p.add_argument("--backlog", type=int, default=1024, help="listen backlog of both servers")
    p.add_argument("--keepalive-idle", type=float, default=15.0,
                   help="keep-alive idle time, s (whole seconds for TCP); longer than the "
                        "ramp, so that the ramp's CPU is the accepts' alone")
    p.add_argument("--keepalive-interval", type=float, default=5.0)
    p.add_argument("--keepalive-count", type=int, default=4)
    p.add_argument("--hold", type=float, default=None,
                   help="seconds to hold the idle connections (default 2 x idle + 1)")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds between the last echo and the idle memory reading")
    p.add_argument("--op-timeout", type=float, default=60.0,
                   help="client: limit for one handshake, one echo or one close")
    p.add_argument("--timeout", type=float, default=300.0, help="limit for one transport's run")
    p.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                   help="trace Gannet server allocations (slow; for profiling)")
    p.add_argument("--profile", metavar="PATH",
                   help="cProfile the Gannet server over the ramp into PATH (pstats format)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the table as markdown")
    # child roles
    p.add_argument("--role", choices=["server", "client"], help=argparse.SUPPRESS)
    p.add_argument("--transport", choices=TRANSPORTS, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.role == "server":
        asyncio.run(run_server(args))
        return 0
    if args.role == "client":
        asyncio.run(run_client(args))
        return 0

    if args.hold is None:
        args.hold = 2 * args.keepalive_idle + 1
    names = [t.strip() for t in args.transports.split(",") if t.strip()]
    bad = [t for t in names if t not in TRANSPORTS]
    if bad or not names:
        p.error(f"unknown transport(s): {', '.join(bad)}")
    raise_nofile(args.connections + 1024)
    command = "python bench/scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    info = machine_info()
    results = {}
    for t in names:
        results[t] = run_transport(t, args)
    print_table(results, info, command, args)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"command": command, "machine": info, "results": results}, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(results, info, command))
    return 0 if all(r.get("ok") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
