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

import sys

import atheris

with atheris.instrument_imports(include=["gannet"]):
    import targets


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        sys.exit(f"usage: harness.py TARGET [libFuzzer options] (TARGET: {', '.join(targets.TARGETS)})")
    check = targets.TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
