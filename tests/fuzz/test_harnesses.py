"""The short fuzzing run of CI: each atheris harness, from its seed corpus,
for a bounded number of inputs (a few seconds each), must finish clean.

The long run (tests/fuzz/long_run.py) and what it found are in
docs/robustness.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import targets
from long_run import libfuzzer_args

HERE = Path(__file__).parent
# Inputs per harness: the endpoint and handshake checks build endpoints for
# each input (about 3 ms and 0.5 ms instrumented); the decoders take microseconds.
RUNS = {"endpoint": 1500, "handshake": 4000}

if sys.platform != "linux":
    pytest.skip("atheris is installed (pyproject's test extra) on Linux only", allow_module_level=True)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_harness_runs_clean_from_its_seed_corpus(name, tmp_path):
    runs = RUNS.get(name, 8000)
    new = tmp_path / "new"  # libFuzzer writes new inputs to the first directory
    new.mkdir()
    cmd = [sys.executable, str(HERE / "harness.py"), name, f"-runs={runs}", "-seed=1",
           *libfuzzer_args(name, tmp_path), str(new), str(HERE / "corpus" / name)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=240)
    failing = sorted(tmp_path.glob("crash-*")) + sorted(tmp_path.glob("timeout-*"))
    assert proc.returncode == 0 and not failing, proc.stderr[-4000:]
    seeds = len(list((HERE / "corpus" / name).iterdir()))
    loaded = re.search(r"INITED .* corp: (\d+)/", proc.stderr)
    assert loaded and int(loaded.group(1)) >= 1, proc.stderr[-2000:]
    assert seeds >= 2
    assert re.search(rf"Done {runs} runs", proc.stderr), proc.stderr[-2000:]
