"""Start-up cost of the `gannet` command: medians of repeated runs.

Two measures, each run N times as fresh processes (as hyperfine would):

* ``gannet --help``: process start to exit;
* ``gannet send`` start to first data byte: a local ``gannet receive`` is
  started once; each run sends a small new file (one DATA frame) with the
  code the receiver printed (the default, encrypted and authenticated) and
  the clock stops when the file's bytes appear under the receive directory
  (the receiver writes each frame as it arrives).

    python bench/startup.py                      # this checkout's code
    python bench/startup.py --src /tmp/old/src   # another tree, via PYTHONPATH
    python bench/startup.py --runs 30 --json out.json

Both commands run as ``python -m gannet`` with PYTHONPATH set to the source
tree given (default: the tree this script belongs to), so two trees are
compared with the same interpreter and installed dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def env_for(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def time_help(src: Path, runs: int) -> list[float]:
    env = env_for(src)
    cmd = [sys.executable, "-m", "gannet", "--help"]
    subprocess.run(cmd, env=env, check=True, capture_output=True)  # bytecode cached
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bytes_arrived(directory: Path) -> bool:
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                if os.stat(os.path.join(root, name)).st_size > 0:
                    return True
            except FileNotFoundError:
                pass
    return False


def time_send(src: Path, runs: int, size: int = 1000) -> list[float]:
    env = env_for(src)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="gannet-startup-") as tmp:
        tmp_path = Path(tmp)
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        receiver = subprocess.Popen(
            [sys.executable, "-m", "gannet", "receive", "--port", str(port), "--dir", str(inbox)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            # As a user does: the receiver prints its code, the sender gives it.
            code = None
            line = receiver.stderr.readline() if receiver.stderr else ""
            if "code: " in line:
                code = line.split("code: ", 1)[1].strip()
                line = receiver.stderr.readline() if receiver.stderr else ""
            if "listening" not in line:
                raise RuntimeError(f"gannet receive did not start: {line!r}")
            out = []
            for i in range(runs + 1):  # the first run warms the bytecode cache
                run_dir = tmp_path / f"run{i}"
                run_dir.mkdir()
                src_file = run_dir / f"file{i}.bin"
                src_file.write_bytes(os.urandom(size))
                target = inbox
                t0 = time.perf_counter()
                sender = subprocess.Popen(
                    [sys.executable, "-m", "gannet", "send", str(src_file), f"127.0.0.1:{port}",
                     *(["--code", code] if code else [])],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                deadline = t0 + 20
                while not _bytes_arrived(target):
                    if time.perf_counter() > deadline:
                        sender.kill()
                        raise RuntimeError("no data arrived within 20 s")
                    time.sleep(0.0005)
                took = time.perf_counter() - t0
                if sender.wait(20) != 0:
                    raise RuntimeError(f"gannet send exited with {sender.returncode}")
                for f in inbox.rglob("*"):  # the next run looks for new bytes
                    if f.is_file():
                        f.unlink()
                if i:
                    out.append(took)
            return out
        finally:
            receiver.terminate()
            receiver.wait(10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, default=SRC, help="source tree to run (PYTHONPATH)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    helps = time_help(args.src, args.runs)
    sends = time_send(args.src, args.runs)
    res = {
        "src": str(args.src), "runs": args.runs,
        "help_median_ms": round(statistics.median(helps) * 1000, 1),
        "help_min_ms": round(min(helps) * 1000, 1),
        "send_first_byte_median_ms": round(statistics.median(sends) * 1000, 1),
        "send_first_byte_min_ms": round(min(sends) * 1000, 1),
    }
    print(f"{args.src}: gannet --help median {res['help_median_ms']} ms "
          f"(min {res['help_min_ms']}); gannet send to first byte median "
          f"{res['send_first_byte_median_ms']} ms (min {res['send_first_byte_min_ms']}), "
          f"{args.runs} runs each")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
