"""Start-up cost of the `gannet` command beside its peers: medians of fresh processes.

Each round runs, one after the other, as fresh processes (as hyperfine would):

* ``python -c pass``: the interpreter alone (peer);
* ``python -c "import asyncio"``: the interpreter and the event loop's
  modules, which any asyncio program loads (peer);
* ``gannet --help``: process start to exit;
* ``gannet send`` start to first data byte: a local ``gannet receive`` is
  started once; each round sends a small new file (one DATA frame) with the
  code the receiver printed (the default, encrypted and authenticated) and
  the clock stops when the file's bytes appear under the receive directory
  (the receiver writes each frame as it arrives);
* the same with the sender's stderr on a pseudo-terminal, as a user's shell
  gives it (progress bars on).

Rounds alternate the five, so the ratios compare processes that met the same
machine load; each ratio is the median of the rounds' own ratios. Beside the
wall clock, each process's CPU time (user + system, from `wait4`; for a send
its whole run, not only to the first byte), which the load changes less. Two trees
(``--src`` twice) run in the same rounds, each with its own receiver, in
alternating order.

Phases (``--phases``, the default): the receiver also writes a pcap of what
it sends and receives (``gannet --pcap``), and each send is cut at its
datagrams: start -> SYN (interpreter, imports, keys, the first SPAKE2 and
Noise message), SYN -> SYN-ACK (the receiver's half of the key exchange),
SYN-ACK -> the client's next datagram (the client's half, the transfer
header), -> the receiver's reply, -> the first DATA datagram (opening the
file, the compressor), -> the bytes on the receiver's disk.

    python bench/startup.py                      # this checkout's code
    python bench/startup.py --src /tmp/old/src   # another tree, via PYTHONPATH
    python bench/startup.py --src /tmp/old/src --src src   # both, in the same rounds
    python bench/startup.py --runs 30 --json out.json
    python bench/startup.py --importtime 7       # and what `gannet send` imports
    python bench/startup.py --to-syn 30 --src /tmp/old/src --src src   # to the SYN only
    python bench/startup.py --to-syn 1 --instructions --src /tmp/old/src --src src

To the SYN (``--to-syn N``, instead of the rounds above): `gannet send`
(with a code) to a UDP port that never answers, ended by an audit hook at
its first ``socket.sendto`` (the SYN, before it leaves): N rounds, the
trees in alternating order, the wall clock from spawn to exit and the CPU
time, and each tree's median ratio to the first's. With
``--instructions``, the instructions the process executed to that point
under valgrind instead (callgrind; the same from run to run whatever the
machine's load, but blind to cache misses and page faults). A sender with a
code forks a child for its half of the code exchange where a CPU is likely
idle (gannet.io.spake_child; GANNET_SPAKE_CHILD=1 in the environment forks
it whatever the load), which runs beside it on another core: its count is
given apart, and it includes what the sender had executed when it forked
(callgrind carries the counters into the child).
    python bench/startup.py --host localhost     # the sender resolves the name

Gannet runs as ``python -m gannet`` with PYTHONPATH set to the source tree
given (default: the tree this script belongs to), so two trees are compared
with the same interpreter and installed dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import free_udp_port, machine_info

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
FILE_SIZE = 1000  # one DATA frame, incompressible

PEERS = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import asyncio'": ["-c", "import asyncio"],
}


def env_for(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # cached bytecode, as an installed package has
    return env


def time_process(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of the interpreter with `args`."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    cpu = wait_cpu(proc, 60)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{args} exited with {proc.returncode}")
    return took, cpu


def _bytes_arrived(directory: Path) -> bool:
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                if os.stat(os.path.join(root, name)).st_size > 0:
                    return True
            except FileNotFoundError:
                pass
    return False


class Receiver:
    """One `gannet receive` for every send of the run (with `pcap`, it
    records its datagrams there)."""

    def __init__(self, tmp: Path, env: dict[str, str], pcap: Path | None,
                 host: str = "127.0.0.1") -> None:
        self.host = host  # as the senders name it
        self.inbox = tmp / "inbox"
        self.inbox.mkdir()
        self.port = free_udp_port()
        top = ["--pcap", str(pcap)] if pcap else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gannet", *top, "receive", "--port", str(self.port),
             "--dir", str(self.inbox)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # As a user does: the receiver prints its code, the sender gives it.
        self.code = None
        line = self.proc.stderr.readline() if self.proc.stderr else ""
        if "code: " in line:
            self.code = line.split("code: ", 1)[1].strip()
            line = self.proc.stderr.readline() if self.proc.stderr else ""
        if "listening" not in line:
            self.stop()
            raise RuntimeError(f"gannet receive did not start: {line!r}")

    def stop(self) -> None:
        # SIGINT, not SIGTERM: the receiver exits through its handlers, and
        # its pcap is flushed and closed at exit.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Terminal:
    """A pseudo-terminal for the sender's stderr, as a user's shell gives it
    (progress bars on), drained by a thread."""

    def __init__(self) -> None:
        import pty
        import threading

        self.master, self.slave = pty.openpty()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while True:
            try:
                if not os.read(self.master, 65536):
                    return
            except OSError:
                return

    def close(self) -> None:
        os.close(self.slave)
        self.thread.join(5)
        os.close(self.master)


def time_send(receiver: Receiver, env: dict[str, str], run_dir: Path,
              terminal: Terminal | None = None) -> tuple[float, float, float, float]:
    """(seconds to the first byte, wall-clock start, wall-clock arrival, the
    sender's CPU seconds: user + system of its whole run, which the machine's
    load changes less than the wall clock)."""
    run_dir.mkdir()
    src_file = run_dir / "file.bin"
    src_file.write_bytes(os.urandom(FILE_SIZE))
    wall0 = time.time()
    t0 = time.perf_counter()
    sender = subprocess.Popen(
        [sys.executable, "-m", "gannet", "send", str(src_file), f"{receiver.host}:{receiver.port}",
         *(["--code", receiver.code] if receiver.code else [])],
        env={**env, "COLUMNS": "100", "TERM": "xterm"} if terminal else env,
        stdout=subprocess.DEVNULL, stderr=terminal.slave if terminal else subprocess.DEVNULL)
    deadline = t0 + 20
    while not _bytes_arrived(receiver.inbox):
        if time.perf_counter() > deadline:
            sender.kill()
            raise RuntimeError("no data arrived within 20 s")
        time.sleep(0.0005)
    took = time.perf_counter() - t0
    arrived = time.time()
    cpu = wait_cpu(sender)
    if sender.returncode != 0:
        raise RuntimeError(f"gannet send exited with {sender.returncode}")
    for f in receiver.inbox.rglob("*"):  # the next run looks for new bytes
        if f.is_file():
            f.unlink()
    return took, wall0, arrived, cpu


def wait_cpu(proc: subprocess.Popen, timeout: float = 20) -> float:
    """Wait for `proc` (killed after `timeout`); its user + system CPU seconds."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            deadline = float("inf")
        time.sleep(0.002)


TTY_SEND = "gannet send, stderr a terminal"
PHASES = ("start -> SYN", "SYN -> SYN-ACK (receiver)", "SYN-ACK -> next datagram (client)",
          "-> reply (receiver)", "-> first DATA (client)", "DATA -> on disk")


def phases(pcap: Path, port: int, sends: list[tuple[float, float]], src: Path) -> list[list[float]]:
    """Per send (wall-clock start, arrival): the PHASES in seconds, from the
    receiver's pcap. Each send is a new process, so a new client port."""
    sys.path.insert(0, str(src))
    from gannet.observe import pcap as pcap_file

    by_client: dict[tuple[str, int], list[tuple[float, bool, int]]] = {}
    order: list[tuple[str, int]] = []
    for t, s, d, payload in pcap_file.read(str(pcap)):
        inbound = d[1] == port
        client = s if inbound else d
        if client not in by_client:
            by_client[client] = []
            order.append(client)
        by_client[client].append((t, inbound, len(payload)))
    out = []
    plain = order[-2 * len(sends)::2]  # each round: a plain send, then one on a terminal
    for client, (start, arrived) in zip(plain, sends):
        recs = by_client[client]
        syn = next(t for t, inbound, _ in recs if inbound)
        synack = next(t for t, inbound, _ in recs if not inbound and t >= syn)
        nxt = next(t for t, inbound, _ in recs if inbound and t > synack)
        reply = next(t for t, inbound, _ in recs if not inbound and t > nxt)
        data = next(t for t, inbound, n in recs if inbound and t > reply and n >= FILE_SIZE)
        out.append([syn - start, synack - syn, nxt - synack, reply - nxt, data - reply,
                    arrived - data])
    return out


def importtime(src: Path, runs: int) -> list[tuple[str, float, float]]:
    """`gannet send --help`'s and a real send's imports are the same up to the
    transfer; this times a real send: (top-level module, min cumulative ms,
    min self ms) over `runs`, in import order."""
    env = env_for(src)
    best: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="gannet-startup-") as tmp:
        receiver = Receiver(Path(tmp), env, None)
        try:
            f = Path(tmp) / "file.bin"
            f.write_bytes(os.urandom(FILE_SIZE))
            for _ in range(runs + 1):
                p = subprocess.run(
                    [sys.executable, "-X", "importtime", "-m", "gannet", "send", str(f),
                     f"127.0.0.1:{receiver.port}", *(["--code", receiver.code] if receiver.code else [])],
                    env=env, capture_output=True, text=True, check=True)
                for line in p.stderr.splitlines():
                    if not line.startswith("import time:") or "[us]" in line:
                        continue
                    own, cumulative, name = line[len("import time:"):].split("|")
                    if name.startswith("  "):
                        continue  # only what the program itself imports
                    b = best.setdefault(name.strip(), [float("inf"), float("inf")])
                    b[0] = min(b[0], int(cumulative) / 1000)
                    b[1] = min(b[1], int(own) / 1000)
                for g in Path(receiver.inbox).rglob("*"):
                    if g.is_file():
                        g.unlink()
        finally:
            receiver.stop()
    return [(name, c, s) for name, (c, s) in best.items()]


# Runs `gannet` as `python -m gannet` would, and ends the process at its
# first sendto (the SYN), before the datagram leaves.
_TO_SYN_HOOK = (
    "import os, runpy, sys\n"
    "def hook(event, args):\n"
    "    if event == 'socket.sendto':\n"
    "        os._exit(0)\n"
    "sys.addaudithook(hook)\n"
    "sys.argv = ['gannet', *sys.argv[1:]]\n"
    "runpy.run_module('gannet', run_name='__main__', alter_sys=True)\n"
)


def to_syn(sources: list[Path], runs: int, instructions: bool) -> dict:
    """Each tree's process start to its first sendto: per tree, the wall
    and CPU medians (ms) and their median ratios to the first tree's, or
    with `instructions` the median instruction count (valgrind)."""
    walls: dict[Path, list[float]] = {src: [] for src in sources}
    cpus: dict[Path, list[float]] = {src: [] for src in sources}
    children: dict[Path, list[float]] = {src: [] for src in sources}  # instructions
    with tempfile.TemporaryDirectory(prefix="gannet-startup-") as tmp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # (receives the SYN, never answers)
        f = Path(tmp) / "file.bin"
        f.write_bytes(os.urandom(FILE_SIZE))
        send = ["send", str(f), f"127.0.0.1:{silent.getsockname()[1]}", "--code", "7-guitar-october"]
        for i in range(runs + 1):  # round 0 warms the bytecode caches
            for src in sources if i % 2 else sources[::-1]:
                env = {**env_for(src), "XDG_RUNTIME_DIR": tmp, "XDG_CONFIG_HOME": tmp}
                if instructions:
                    env["PYTHONHASHSEED"] = "0"
                    out = subprocess.run(
                        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                         sys.executable, "-c", _TO_SYN_HOOK, *send],
                        env=env, capture_output=True, text=True, check=True)
                    count, forked = instruction_counts(out.stderr)
                    if i:
                        walls[src].append(count)
                        children[src].append(forked)
                    continue
                took, cpu = time_process(["-c", _TO_SYN_HOOK, *send], env)
                if i:
                    walls[src].append(took * 1000)
                    cpus[src].append(cpu * 1000)
    first = sources[0]
    out: dict = {}
    for src in sources:
        row: dict = {"median": statistics.median(walls[src]), "min": min(walls[src]),
                     "ratio": round(ratio(walls[src], walls[first]), 3)}
        if not instructions:
            row.update(cpu_median=statistics.median(cpus[src]),
                       cpu_ratio=round(ratio(cpus[src], cpus[first]), 3))
        elif any(children[src]):
            row["children_median"] = statistics.median(children[src])
        out[str(src)] = row
    return out


def instruction_counts(valgrind_stderr: str) -> tuple[int, int]:
    """(the process's instructions, its forked children's together) from
    callgrind's output: each process reports its own `==PID== Collected`
    line (a child that `gannet send` forks to compute its half of the code
    exchange on another core, gannet.crypto.spake, is followed too); the
    process is the one that speaks first."""
    pid = None
    own = forked = 0
    for line in valgrind_stderr.splitlines():
        if not line.startswith("=="):
            continue
        who = line.split("==")[1]
        pid = pid or who
        if "Collected" in line:
            count = int(line.rsplit(":", 1)[1].replace(",", ""))
            if who == pid:
                own = count
            else:
                forked += count
    return own, forked


def ratio(xs: list[float], ys: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(xs, ys))


GANNET_ROWS = ("gannet --help", "gannet send", TTY_SEND)


class Tree:
    """One source tree's rows, with its own receiver."""

    def __init__(self, src: Path, tmp: Path, args: argparse.Namespace) -> None:
        self.src = src
        self.env = env_for(src)
        self.tmp = tmp
        self.pcap = tmp / "receiver.pcap" if args.phases else None
        self.receiver = Receiver(tmp, self.env, self.pcap, args.host)
        self.times: dict[str, list[float]] = {name: [] for name in GANNET_ROWS}
        self.cpu: dict[str, list[float]] = {name: [] for name in GANNET_ROWS}
        self.sends: list[tuple[float, float]] = []

    def round(self, i: int, terminal: Terminal, keep: bool) -> None:
        row, help_cpu = {}, 0.0
        row["gannet --help"], help_cpu = time_process(["-m", "gannet", "--help"], self.env)
        took, start, arrived, cpu = time_send(self.receiver, self.env, self.tmp / f"run{i}")
        row["gannet send"] = took
        row[TTY_SEND], _, _, tty_cpu = time_send(self.receiver, self.env, self.tmp / f"tty{i}", terminal)
        if keep:
            self.cpu["gannet --help"].append(help_cpu)
            self.cpu["gannet send"].append(cpu)
            self.cpu[TTY_SEND].append(tty_cpu)
            for name, t in row.items():
                self.times[name].append(t)
            self.sends.append((start, arrived))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, action="append", default=None,
                   help="source tree to run (PYTHONPATH; default this checkout's); given twice, "
                   "both trees run in every round, and the second is compared with the first")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--host", default="127.0.0.1",
                   help="the receiver's address as the sender is given it (default 127.0.0.1; "
                   "`localhost` adds the resolver)")
    p.add_argument("--no-phases", dest="phases", action="store_false",
                   help="no pcap at the receiver, no phase breakdown")
    p.add_argument("--importtime", type=int, default=0, metavar="N",
                   help="also list what `gannet send` imports (-X importtime, minimum of N runs)")
    p.add_argument("--to-syn", type=int, default=0, metavar="N",
                   help="only time each tree's start to its SYN, N rounds (see above)")
    p.add_argument("--instructions", action="store_true",
                   help="with --to-syn: count instructions (valgrind) instead of time")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    sources = args.src or [SRC]
    if args.to_syn:
        load_before = os.getloadavg()
        rows = to_syn(sources, args.to_syn, args.instructions)
        unit = "instructions" if args.instructions else "ms"
        print(f"to the SYN, {args.to_syn} rounds ({unit}), load average {load_before[0]:.1f} -> "
              f"{os.getloadavg()[0]:.1f}")
        for src, row in rows.items():
            cpu = (f"; CPU median {row['cpu_median']:.1f} ms, {row['cpu_ratio']:.3f}x"
                   if "cpu_median" in row else "")
            if "children_median" in row:
                cpu += f"; its forked child {row['children_median']:,.0f} more, on another core"
            fmt = ",.0f" if args.instructions else ".1f"
            print(f"  {src}: median {row['median']:{fmt}} (min {row['min']:{fmt}}), "
                  f"{row['ratio']:.3f}x the first{cpu}")
        if args.json:
            args.json.write_text(json.dumps({"to_syn": rows, "unit": unit, "runs": args.to_syn,
                                             "machine": machine_info()}, indent=2) + "\n")
        return 0
    load_before = os.getloadavg()
    peers: dict[str, list[float]] = {name: [] for name in PEERS}
    peers_cpu: dict[str, list[float]] = {name: [] for name in PEERS}
    with tempfile.TemporaryDirectory(prefix="gannet-startup-") as tmp:
        trees: list[Tree] = []
        terminal = Terminal()
        try:
            for k, src in enumerate(sources):
                (Path(tmp) / str(k)).mkdir()
                trees.append(Tree(src, Path(tmp) / str(k), args))
            env = trees[0].env
            for i in range(args.runs + 1):  # round 0 warms the bytecode caches
                row = {name: time_process(a, env) for name, a in PEERS.items()}
                if i:
                    for name, (t, cpu) in row.items():
                        peers[name].append(t)
                        peers_cpu[name].append(cpu)
                for tree in trees if i % 2 else trees[::-1]:  # (neither always first)
                    tree.round(i, terminal, keep=i > 0)
        finally:
            terminal.close()
            for tree in trees:
                tree.receiver.stop()
        # (the phases are those of the plain sends: every second connection)
        cut = {tree.src: phases(tree.pcap, tree.receiver.port, tree.sends, tree.src)
               for tree in trees if tree.pcap}
    load_after = os.getloadavg()

    res: dict = {
        "runs": args.runs, "machine": machine_info(), "loadavg_before": load_before,
        "loadavg_after": load_after,
        "peers_median_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in peers.items()},
        "peers_cpu_median_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in peers_cpu.items()},
        "trees": [],
    }
    print(f"{args.runs} rounds, load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    for name, v in peers.items():
        print(f"  {name:<32} median {statistics.median(v) * 1000:7.1f} ms  (min {min(v) * 1000:.1f})"
              f"; CPU median {res['peers_cpu_median_ms'][name]:.1f} ms")
    for tree in trees:
        t = tree.times
        out: dict = {
            "src": str(tree.src),
            "median_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in t.items()},
            "min_ms": {k: round(min(v) * 1000, 1) for k, v in t.items()},
            "cpu_median_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in tree.cpu.items()},
            "ratios": {f"{cmd} / {peer}": round(ratio(t[cmd], peers[peer]), 2)
                       for cmd in GANNET_ROWS for peer in PEERS},
            "cpu_ratios": {f"{cmd} / {peer}": round(ratio(tree.cpu[cmd], peers_cpu[peer]), 2)
                           for cmd in GANNET_ROWS for peer in PEERS},
        }
        print(f"{tree.src}:")
        for name in GANNET_ROWS:
            cpu = out["cpu_median_ms"].get(name)
            print(f"  {name:<32} median {out['median_ms'][name]:7.1f} ms  (min {out['min_ms'][name]:.1f})"
                  + f"; CPU (whole process) median {cpu:.1f} ms")
        for name, r in out["ratios"].items():
            print(f"  {name:<60} {r:5.2f}x (CPU {out['cpu_ratios'][name]:.2f}x)")
        if cut.get(tree.src):
            c = cut[tree.src]
            out["phases_median_ms"] = {
                name: round(statistics.median(x[i] for x in c) * 1000, 1) for i, name in enumerate(PHASES)}
            print("  gannet send, by phase (median ms; the receiver's pcap):")
            for name, ms in out["phases_median_ms"].items():
                print(f"    {name:<36} {ms:7.1f}")
        res["trees"].append(out)
    if len(trees) == 2:
        res["second_over_first"] = {
            name: round(ratio(trees[1].times[name], trees[0].times[name]), 2) for name in GANNET_ROWS}
        res["second_over_first_cpu"] = {
            name: round(ratio(trees[1].cpu[name], trees[0].cpu[name]), 2) for name in GANNET_ROWS}
        print(f"{trees[1].src} / {trees[0].src} (median of the rounds' ratios):")
        for name, r in res["second_over_first"].items():
            print(f"  {name:<32} {r:5.2f}x")
        for name, r in res["second_over_first_cpu"].items():
            print(f"  {name + ', CPU':<32} {r:5.2f}x")
    if args.importtime:
        for src in sources:
            rows = importtime(src, args.importtime)
            res.setdefault("send_imports_min_ms", {})[str(src)] = {name: c for name, c, _ in rows}
            print(f"{src}: what `gannet send` imports (top level, min cumulative of "
                  f"{args.importtime} runs, ms; sum {sum(c for _, c, _ in rows):.1f}):")
            for name, c, _ in rows:
                if c >= 1.0:
                    print(f"    {name:<44} {c:6.1f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
