"""The whole package type-checks ([tool.mypy] in pyproject.toml). The
compiled build is made from these annotations (mypyc checks them at run
time, so a wrong one there is a TypeError in the compiled build only), and
the rest of the package is held to the same types it hands the core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_is_mypy_clean(tmp_path: Path) -> None:
    # (a cold run, no cache: 6-8 s on a loaded two-core machine; the bound
    # is for a far slower one)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "mypy-cache")],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout
    # every module of the package, not a part of it
    checked = int(proc.stdout.split(" in ")[-1].split()[0])
    sources = [p for p in (ROOT / "src" / "gannet").rglob("*.py")]
    assert checked == len(sources), proc.stdout
