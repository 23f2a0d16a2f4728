"""Run one decoder check (targets.py) under atheris, libFuzzer for Python.

    python tests/fuzz/harness.py TARGET [libFuzzer options] [CORPUS_DIR...]

TARGET is one of targets.TARGETS. Gannet's modules are instrumented for
coverage, so libFuzzer steers its mutations into code not reached yet. The
seed corpus of each target is tests/fuzz/corpus/TARGET; pass a scratch
directory first so that new inputs land there, not in the repository:

    python tests/fuzz/harness.py wire -max_total_time=600 /tmp/wire tests/fuzz/corpus/wire

A failing input is written as crash-<sha1> (see -artifact_prefix); replay it
by passing the file instead of a directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import atheris

# Coverage comes from instrumenting Python bytecode, so the harness fuzzes
# the pure-Python core: the compiled core is built from the same source, and
# tests/simtransfer/test_differential.py holds the two builds equal.
os.environ["GANNET_PURE"] = "1"
import gannet  # noqa: E402,F401 - its finder for the pure core is in place before atheris wraps the finders

with atheris.instrument_imports(include=["gannet"]):
    import targets


ENV = "GANNET_FUZZ_TARGET"


def main() -> None:
    # libFuzzer runs this program again in some modes (-merge, -fork), with
    # the options it was given: the target travels in the environment, and
    # argv[0] is a command line that starts this script with this Python.
    if len(sys.argv) > 1 and sys.argv[1] in targets.TARGETS:
        os.environ[ENV] = sys.argv.pop(1)
    name = os.environ.get(ENV)
    if name not in targets.TARGETS:
        sys.exit(f"usage: harness.py TARGET [libFuzzer options] (TARGET: {', '.join(targets.TARGETS)})")
    argv = [f"{sys.executable} {Path(__file__).resolve()}", *sys.argv[1:]]
    atheris.Setup(argv, targets.TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
