"""The long fuzzing run recorded in docs/robustness.md.

    nice python tests/fuzz/long_run.py --seconds 720 --jobs 2 --out /tmp/gannet-fuzz [TARGET...]

Runs each harness for `--seconds` of fuzzing in all (`--jobs` harnesses at a
time), from its seed corpus, with new inputs kept under OUT/TARGET/corpus.
libFuzzer stops at the first failing input; this driver then starts it again
(the corpus it has grown is kept) until the time is used or five failures
were found, and prints one line per harness: inputs run, failures (their
files are in OUT/TARGET/), corpus size and coverage reached.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).parent
JSON_TARGETS = {"messages", "negotiation", "transfer", "chat"}
MAX_FAILURES = 5


def libfuzzer_args(target: str, scratch: Path) -> list[str]:
    """Options both this run and the CI test pass: inputs up to 4 KiB, the
    JSON dictionary where the input is JSON, failing inputs kept in `scratch`."""
    args = ["-max_len=4096", "-timeout=20", f"-artifact_prefix={scratch}/"]
    if target in JSON_TARGETS:
        args.append(f"-dict={HERE / 'json.dict'}")
    return args


def run_one(target: str, seconds: float, out: Path) -> str:
    folder = out / target
    corpus = folder / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    end = time.monotonic() + seconds
    runs = failures = 0
    cov = "?"
    log = (folder / "log.txt").open("a")
    while failures < MAX_FAILURES and (left := end - time.monotonic()) > 1:
        cmd = [sys.executable, str(HERE / "harness.py"), target, f"-max_total_time={int(left)}",
               "-print_final_stats=1", *libfuzzer_args(target, folder),
               str(corpus), str(HERE / "corpus" / target)]
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        log.write(proc.stderr)
        counts = [int(n) for n in re.findall(r"^#(\d+)\s", proc.stderr, re.M)]
        done = re.search(r"stat::number_of_executed_units: (\d+)", proc.stderr)
        runs += int(done.group(1)) if done else max(counts, default=0)
        covs = re.findall(r"cov: (\d+)", proc.stderr)
        cov = covs[-1] if covs else cov
        if proc.returncode != 0:
            failures += 1
    crashes = sorted(p.name for p in folder.glob("crash-*"))
    return (f"{target}: {runs} inputs in {seconds:.0f} s, {failures} failure(s) {crashes}, "
            f"corpus {len(list(corpus.iterdir()))} new inputs, cov {cov}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*")
    parser.add_argument("--seconds", type=float, default=720)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/gannet-fuzz"))
    args = parser.parse_args()
    names = args.targets or sorted(p.name for p in (HERE / "corpus").iterdir())
    with ThreadPoolExecutor(args.jobs) as pool:
        for line in pool.map(lambda t: run_one(t, args.seconds, args.out), names):
            print(line, flush=True)


if __name__ == "__main__":
    main()
