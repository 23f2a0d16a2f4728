"""Builds the compiled core (mypyc) when it can; otherwise the package is
pure Python, complete, with a one-line notice. Everything else about the
package is in pyproject.toml.

The modules compiled are gannet._build.MODULES, from their Python source,
and the project's own C extensions (gannet._build.EXTENSIONS), each of which
has its Python equivalent beside it and is built, or not, by itself.
GANNET_PURE=1 at install time skips compiling; GANNET_COMPILE=0 as well.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def notice(why: str) -> None:
    sys.stderr.write(f"gannet: installing the pure-Python core ({why})\n")


# The setup.py commands that build what is installed (pip's metadata steps
# run setup.py too, and need no compiling).
BUILDING = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


def can_compile() -> bool:
    if not BUILDING.intersection(sys.argv[1:]):
        return False
    if os.environ.get("GANNET_PURE", "") not in ("", "0") or os.environ.get("GANNET_COMPILE") == "0":
        notice("asked for by GANNET_PURE / GANNET_COMPILE=0")
        return False
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        notice(f"no C compiler: {cc} not found")
        return False
    if not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        notice("no Python headers (Python.h)")
        return False
    return True


def own_extensions() -> list:
    """The C extensions (gannet._build.EXTENSIONS). They load libcrypto with
    dlopen, so they build without OpenSSL's headers."""
    names = runpy.run_path(os.path.join(HERE, "src", "gannet", "_build.py"))["EXTENSIONS"]
    libraries = ["dl"] if sys.platform.startswith("linux") else []
    # (both include the one CRC32C lane, src/gannet/_crc32c.h)
    depends = [os.path.join("src", "gannet", "_crc32c.h")]
    return [Extension(name, [os.path.join("src", "gannet", source)], libraries=libraries,
                      depends=depends, extra_compile_args=["-O2"]) for name, source in names.items()]


def compiled_modules() -> list:
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
    install: none of the compiled modules is kept (they go together). An
    own C extension that fails to build is left out by itself: its Python
    equivalent runs."""

    def build_extensions(self) -> None:
        self.failed: set = set()
        super().build_extensions()
        # What was not built is not copied into the tree or the wheel.
        self.extensions = [ext for ext in self.extensions if ext.name not in self.failed]

    def build_extension(self, ext) -> None:
        if ext.name not in OWN:
            super().build_extension(ext)
            return
        try:
            super().build_extension(ext)
        except Exception as exc:  # compiler or linker failure of any kind
            path = self.get_ext_fullpath(ext.name)
            if os.path.exists(path):
                os.remove(path)
            self.failed.add(ext.name)
            sys.stderr.write(f"gannet: {ext.name} not built, its Python equivalent will run ({exc})\n")

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # compiler or linker failure of any kind
            for ext in self.extensions:
                path = self.get_ext_fullpath(ext.name)
                if ext.name not in OWN and os.path.exists(path):
                    os.remove(path)
            self.extensions = [ext for ext in self.extensions if ext.name in OWN]
            notice(f"the C build failed: {exc}")


if can_compile():
    OWN_EXTENSIONS = own_extensions()
    EXT_MODULES = compiled_modules() + OWN_EXTENSIONS
else:
    OWN_EXTENSIONS = EXT_MODULES = []
OWN = {ext.name for ext in OWN_EXTENSIONS}
setup(ext_modules=EXT_MODULES, cmdclass={"build_ext": OptionalBuildExt})
