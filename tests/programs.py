"""System programs the tests drive: one place that decides skip or fail.

On a developer's machine a missing program skips the test that needs it, and
the reason names the program and the Debian package that has it. Under CI
(CI=true) the same absence fails: `.ci/run` installs every program listed
here, so a missing one means the install step is broken, not the test.
"""

from __future__ import annotations

import os
import shutil

import pytest

# program -> Debian package (what .ci/run installs)
PACKAGES = {
    "ip": "iproute2",
    "ping": "iputils-ping",
    "tmux": "tmux",
    "redis-server": "redis-server",
    "redis-benchmark": "redis-tools",
    "curl": "curl",
    "iptables": "iptables",
    "nc": "netcat-openbsd",
    "setpriv": "util-linux",
    "tshark": "tshark",
}


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def missing(*programs: str) -> list[str]:
    return [p for p in programs if shutil.which(p) is None]


def require(*programs: str, module: bool = False) -> None:
    """Skip (or, under CI, fail) unless every program is on PATH."""
    absent = missing(*programs)
    if not absent:
        return
    names = ", ".join(absent)
    pkgs = " ".join(sorted({PACKAGES.get(p, p) for p in absent}))
    if under_ci():
        pytest.fail(f"not installed in CI: {names} (.ci/run must apt-get install {pkgs})",
                    pytrace=False)
    pytest.skip(f"needs {names} (Debian: apt-get install -y {pkgs})", allow_module_level=module)
