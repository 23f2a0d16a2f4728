"""Builds the compiled core (mypyc) when it can; otherwise the package is
pure Python, complete, with a one-line notice. Everything else about the
package is in pyproject.toml.

The modules compiled are gannet._build.MODULES, from their Python source.
GANNET_PURE=1 at install time skips compiling; GANNET_COMPILE=0 as well.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import sysconfig

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def notice(why: str) -> None:
    sys.stderr.write(f"gannet: installing the pure-Python core ({why})\n")


# The setup.py commands that build what is installed (pip's metadata steps
# run setup.py too, and need no compiling).
BUILDING = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


def compiled_modules() -> list:
    if not BUILDING.intersection(sys.argv[1:]):
        return []
    if os.environ.get("GANNET_PURE", "") not in ("", "0") or os.environ.get("GANNET_COMPILE") == "0":
        notice("asked for by GANNET_PURE / GANNET_COMPILE=0")
        return []
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        notice(f"no C compiler: {cc} not found")
        return []
    if not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        notice("no Python headers (Python.h)")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        notice("mypyc is not installed")
        return []
    names = runpy.run_path(os.path.join(HERE, "src", "gannet", "_build.py"))["MODULES"]
    paths = [os.path.join("src", *name.split(".")) + ".py" for name in names]
    # Modules outside the compiled set are read for their types only; the
    # build environment need not hold the runtime dependencies (crc32c).
    flags = ["--follow-imports=silent", "--ignore-missing-imports"]
    try:
        return mypycify([*flags, *paths], opt_level="3", verbose=False)
    except (Exception, SystemExit) as exc:  # mypy reports errors by exiting
        notice(f"mypyc could not compile the core: {exc}")
        return []


class OptionalBuildExt(build_ext):
    """A failed compile leaves the package pure rather than failing the
    install: none of the compiled modules is kept (they go together)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # compiler or linker failure of any kind
            for ext in self.extensions:
                path = self.get_ext_fullpath(ext.name)
                if os.path.exists(path):
                    os.remove(path)
            self.extensions = []
            notice(f"the C build failed: {exc}")


setup(ext_modules=compiled_modules(), cmdclass={"build_ext": OptionalBuildExt})
