"""Which core runs: the compiled modules all together, or (GANNET_PURE=1)
every one of them from its Python source (gannet/_build.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from gannet import _build

PROBE = (
    "import importlib, json, gannet._build as b; "
    "files = {m: importlib.import_module(m).__file__ for m in b.MODULES}; "
    "print(json.dumps([b.build(), files]))"
)


def probe(**env: str) -> tuple[str, dict[str, str]]:
    base = {k: v for k, v in os.environ.items() if k != "GANNET_PURE"}
    proc = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    build, files = json.loads(proc.stdout)
    return build, files


def test_gannet_pure_loads_every_core_module_from_its_source():
    build, files = probe(GANNET_PURE="1")
    assert build == "pure"
    assert sorted(files) == sorted(_build.MODULES)
    assert all(path.endswith(".py") for path in files.values()), files


def test_the_default_build_is_all_compiled_or_all_pure():
    build, files = probe()
    compiled = [m for m, path in files.items() if not path.endswith(".py")]
    assert compiled == ([] if build == "pure" else list(_build.MODULES))


def test_gannet_pure_0_is_the_default():
    assert probe(GANNET_PURE="0") == probe()


def test_a_source_newer_than_its_compiled_copy_is_named_stale(tmp_path, monkeypatch):
    pkg = tmp_path / "src" / "gannet"
    (pkg / "core").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("")
    src = pkg / "core" / "timers.py"
    so = pkg / "core" / f"timers{_build.EXTENSION_SUFFIXES[0]}"
    src.write_text("")
    so.write_bytes(b"")
    monkeypatch.setattr(_build, "_PACKAGE_DIR", str(pkg))
    os.utime(src, (1000, 1000))
    os.utime(so, (2000, 2000))
    assert _build.stale_modules() == []
    os.utime(src, (3000, 3000))
    assert _build.stale_modules() == ["gannet.core.timers"]


def test_without_a_c_compiler_the_build_is_pure_with_a_notice(tmp_path):
    """setup.py: no compiler, no compiled module, and one line saying why."""
    root = _build._PACKAGE_DIR.rsplit(os.sep, 2)[0]
    if not os.path.exists(os.path.join(root, "setup.py")):
        pytest.skip("gannet is not imported from a source checkout")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(os.path.join(root, name), tmp_path / name)
    shutil.copytree(os.path.join(root, "src"), tmp_path / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"))
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tmp_path,
                          env={**{k: v for k, v in os.environ.items()  # (either would skip compiling first)
                                  if k not in ("GANNET_PURE", "GANNET_COMPILE")}, "CC": "no-such-cc"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    notices = [line for line in proc.stderr.splitlines() if line.startswith("gannet:")]
    assert notices == ["gannet: installing the pure-Python core (no C compiler: no-such-cc not found)"]
    assert not list((tmp_path / "src").rglob("*.so"))
