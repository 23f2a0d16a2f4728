"""Where the wall-clock time of one ping-pong round trip goes: system calls,
wake-ups and the time between them, per process, from the kernel's own
tracepoints.

    python bench/rtt_phases.py                                   # udp, udpaio, gannet-insecure
    python bench/rtt_phases.py --transports gannet,gannet-insecure --pin split
    python bench/rtt_phases.py --transports gannet-insecure --gannet-api socket

Each transport's ping-pong (the same runners as bench/compare.py) runs as
a server and a client process, each under `perf record` of the raw system
call tracepoints on CLOCK_MONOTONIC, so that both traces share one clock.
Printed per transport:

- the round trip's p50 as the client measured it (perf's tracing adds a
  few microseconds per round trip; compare transports within one run);
- system calls per round trip and process, by name, counted in the middle
  four fifths of the run (between the client's sends at a tenth and at
  nine tenths of the run, so that neither the handshake and its lazy
  imports nor the close are counted; a round trip is a client send), and
  how many `epoll_pwait`/`poll` calls returned no event (a timer's wake-up
  between messages);
- the round trip cut at the four events that carry the message across:
  client send -> server wake-up (the kernel's delivery and the wake-up),
  server wake-up -> its reply's send (the server's work before the
  reply leaves: what the protocol and the event loop cost on the critical
  path), server send -> client wake-up, client wake-up -> its next send
  (the client's work, with the benchmark's own loop);
- the server's typical activation (from a wake-up that returned events to
  its next wait), system call by system call, medians.

`--pin same` runs both processes on one CPU (`taskset`), `--pin split` on
one CPU each; by default the scheduler places them (on a loaded machine
it puts them on one CPU: the peer's wake-up preempts the sender, and the
round trip is the sum of both sides' CPU time). Needs `perf` and the
right to trace (root, or perf_event_paranoid <= -1): otherwise it says so
and exits 2.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNNERS = {
    "udp": ("run_udp.py", ["--mode", "loop"]),
    "udpaio": ("run_udp.py", ["--mode", "aio"]),
    "gannet": ("run_gannet.py", ["--uvloop"]),
    "gannet-insecure": ("run_gannet.py", ["--uvloop", "--insecure"]),
}
# x86-64 system call numbers of the calls a ping-pong makes
NAMES = {0: "read", 1: "write", 7: "poll", 16: "ioctl", 44: "sendto", 45: "recvfrom",
         46: "sendmsg", 47: "recvmsg", 202: "futex", 232: "epoll_wait", 233: "epoll_ctl",
         270: "pselect6", 271: "ppoll", 281: "epoll_pwait", 288: "accept4", 299: "recvmmsg",
         307: "sendmmsg", 39: "getpid", 228: "clock_gettime"}
SENDS = {"sendto", "sendmsg", "sendmmsg", "write"}
WAITS = {"epoll_pwait", "epoll_wait", "poll", "ppoll", "pselect6"}
LINE = re.compile(r"\s*(\d+)\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit):\s+NR (\d+)\s*(.*)")


def trace(path: Path) -> list[tuple[float, int, str, str, str]]:
    """(time us, tid, name, enter|exit, return value) of every system call."""
    out = subprocess.run(["perf", "script", "-i", str(path), "-F", "tid,time,event,trace"],
                         capture_output=True, text=True, check=False).stdout
    events = []
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            ret = m[5].split("=")[-1].strip() if m[3] == "exit" else ""
            events.append((float(m[2]) * 1e6, int(m[1]), NAMES.get(int(m[4]), m[4]), m[3], ret))
    return events


def window(events: list, main: int) -> tuple[float, float, int]:
    """(from, to, round trips): the client's sends at a tenth and at nine
    tenths of the run, and how many it made in between."""
    sends = [e[0] for e in events if e[1] == main and e[2] in SENDS and e[3] == "enter"]
    a, b = len(sends) // 10, len(sends) - len(sends) // 10 - 1
    return sends[a], sends[b], b - a


def main_thread(events: list) -> int:
    count = collections.Counter(e[1] for e in events if e[2] in SENDS and e[3] == "enter")
    return count.most_common(1)[0][0]


def activations(events: list, main: int) -> list[list[tuple[str, float]]]:
    """The main thread's runs from a wait that returned events to its next wait."""
    acts: list[list[tuple[str, float]]] = []
    cur: list[tuple[str, float]] | None = None
    for t, tid, name, kind, ret in events:
        if tid != main:
            continue
        if name in WAITS and kind == "exit":
            cur = [(name + " returns", t)] if ret != "0" else None
            if cur is not None:
                acts.append(cur)
        elif cur is not None:
            cur.append((name + (" enter" if kind == "enter" else " returns"), t))
            if name in WAITS:
                cur = None
    return acts


def typical(acts: list) -> list[tuple[str, float]]:
    shapes = collections.Counter(tuple(n for n, _ in a) for a in acts)
    if not shapes:
        return []
    shape, _ = shapes.most_common(1)[0]
    offsets = [[t - a[0][1] for _, t in a] for a in acts if tuple(n for n, _ in a) == shape]
    return [(n, statistics.median(o[i] for o in offsets)) for i, n in enumerate(shape)]


def crossing(client: list, cmain: int, server: list, smain: int) -> dict[str, list[float]]:
    """The four legs of each round trip (see the module's docstring)."""
    marks = []
    for role, events, main in (("c", client, cmain), ("s", server, smain)):
        for t, tid, name, kind, ret in events:
            if tid != main:
                continue
            if name in SENDS and kind == "enter":
                marks.append((t, role, "send"))
            elif name in WAITS and kind == "exit" and ret != "0":
                marks.append((t, role, "wake"))
    marks.sort()
    order = [("c", "send"), ("s", "wake"), ("s", "send"), ("c", "wake")]
    names = ["client send -> server wake-up", "server wake-up -> server send",
             "server send -> client wake-up", "client wake-up -> client send"]
    legs: dict[str, list[float]] = {n: [] for n in names}
    i, last = 0, None
    for t, role, kind in marks:
        if (role, kind) != order[i]:
            continue
        if last is not None:
            legs[names[(i - 1) % 4]].append(t - last)
        last, i = t, (i + 1) % 4
    return legs


def run(name: str, args, tmp: Path) -> dict:
    module, extra = RUNNERS[name]
    if name.startswith("gannet"):
        extra = [*extra, "--api", args.gannet_api]
        if args.gannet_busy_poll is not None:
            extra = [*extra, "--busy-poll", str(args.gannet_busy_poll)]
    pins = {"none": ("", ""), "same": ("1", "1"), "split": ("0", "1")}[args.pin]
    files = {role: tmp / f"{name}.{role}.data" for role in ("server", "client")}

    def cmd(role: str, more: list[str]) -> list[str]:
        pre = ["taskset", "-c", pins[role == "client"]] if pins[0] else []
        return [*pre, "perf", "record", "-q", "-k", "CLOCK_MONOTONIC",
                "-e", "raw_syscalls:sys_enter,raw_syscalls:sys_exit", "-o", str(files[role]),
                sys.executable, str(HERE / module), role, "--workload", "pingpong",
                "--count", str(args.count), *extra, *more]

    srv = subprocess.Popen(cmd("server", []), stdout=subprocess.PIPE, text=True)
    assert srv.stdout is not None
    port = next((line.split()[1] for line in srv.stdout if line.startswith("READY")), None)
    if port is None:
        srv.kill()
        return {"error": "server did not start"}
    try:
        cli = subprocess.run(cmd("client", ["--port", port]), capture_output=True, text=True,
                             timeout=args.timeout, check=False)
    finally:
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()
    lines = [ln for ln in cli.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"error": "client failed: " + cli.stderr[-400:]}
    result = json.loads(lines[-1][len("RESULT "):])
    row: dict = {"p50_us": result.get("p50_us"), "rtts": result.get("rtts")}
    traces = {role: trace(path) for role, path in files.items()}
    mains = {role: main_thread(ev) for role, ev in traces.items()}
    lo, hi, n = window(traces["client"], mains["client"])
    for role, events in traces.items():
        part = [e for e in events if lo <= e[0] < hi]
        calls = collections.Counter(e[2] for e in part if e[3] == "enter")
        idle = sum(1 for e in part if e[2] in WAITS and e[3] == "exit" and e[4] == "0")
        row[role] = {"calls": {k: v / n for k, v in calls.most_common()}, "no_event_wakeups": idle / n,
                     "threads": len({e[1] for e in part})}
        row[role]["activation"] = typical(activations(part, mains[role]))
    legs = crossing(traces["client"], mains["client"], traces["server"], mains["server"])
    row["legs"] = {k: statistics.median(v) for k, v in legs.items() if v}
    return row


def show(name: str, row: dict) -> None:
    if "error" in row:
        print(f"{name}: {row['error']}")
        return
    print(f"== {name}: p50 {row['p50_us']:.1f} us over {row['rtts']} round trips (traced)")
    for role in ("client", "server"):
        r = row[role]
        calls = ", ".join(f"{k} {v:.2f}" for k, v in r["calls"].items() if v >= 0.005)
        print(f"  {role}: per round trip {calls}; waits that returned no event "
              f"{r['no_event_wakeups']:.3f}; threads {r['threads']}")
    for leg, us in row["legs"].items():
        print(f"  {leg:32s} {us:6.1f} us")
    print("  server's activation (median offsets from its wake-up, us):")
    prev = 0.0
    for step, at in row["server"]["activation"]:
        print(f"    {at:6.1f} (+{at - prev:5.1f})  {step}")
        prev = at


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transports", default="udp,udpaio,gannet-insecure")
    p.add_argument("--count", type=int, default=3000, help="round trips per run")
    p.add_argument("--pin", choices=["none", "same", "split"], default="none")
    p.add_argument("--gannet-api", choices=["streams", "socket"], default="streams")
    p.add_argument("--gannet-busy-poll", type=int, default=None, metavar="US",
                   help="Gannet's Config.busy_poll (0: off; default: the installed default)")
    p.add_argument("--timeout", type=float, default=180.0)
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    if shutil.which("perf") is None:
        print("perf is not installed")
        return 2
    probe = subprocess.run(["perf", "record", "-q", "-o", "/dev/null", "-e", "raw_syscalls:sys_enter",
                            "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        print("perf cannot trace system calls here: " + probe.stderr.strip()[-300:])
        return 2
    rows = {}
    with tempfile.TemporaryDirectory(prefix="rtt_phases") as tmp:
        for name in args.transports.split(","):
            rows[name] = run(name, args, Path(tmp))
            show(name, rows[name])
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
