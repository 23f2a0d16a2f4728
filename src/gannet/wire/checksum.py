"""CRC32C (Castagnoli), the checksum every datagram carries: the `crc32c`
package's C function, loaded without the package's ``__init__``.

That ``__init__`` reads the package's own version through
``importlib.metadata`` (which imports ``email``, ``zipfile``, ``csv`` and
scans ``sys.path`` for the distribution): 10-14 ms before `gannet send`'s
first datagram (``-X importtime``, BENCHMARKS.md "Start-up"), for a string
Gannet never reads. The extension module itself needs nothing from the package, so it is
loaded from the package's directory under its own name
(``crc32c._crc32c``), where a later ``import crc32c`` finds and reuses it.
Anything unexpected (another layout, another version) falls back to the
ordinary import: the function is the same either way.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing)
if TYPE_CHECKING:
    from collections.abc import Callable

_EXTENSION = "crc32c._crc32c"


def _load_extension() -> Callable[..., int]:
    module = sys.modules.get(_EXTENSION)
    if module is None:
        from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, FileFinder
        from importlib.util import find_spec, module_from_spec

        package = find_spec("crc32c")  # locates the package; runs none of it
        if package is None or not package.submodule_search_locations:
            raise ImportError("crc32c is not a package here")
        spec = None
        for directory in package.submodule_search_locations:
            finder = FileFinder(directory, (ExtensionFileLoader, EXTENSION_SUFFIXES))
            spec = finder.find_spec(_EXTENSION)
            if spec is not None:
                break
        if spec is None or spec.loader is None:
            raise ImportError(f"no {_EXTENSION} extension in {package.submodule_search_locations}")
        module = module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[_EXTENSION] = module
    return module.crc32c


def _load() -> Callable[..., int]:
    if "crc32c" not in sys.modules:
        try:
            return _load_extension()
        except (ImportError, AttributeError, OSError):
            pass
    from crc32c import crc32c as function

    return function


crc32c = _load()
"""`crc32c(data, value=0) -> int`: the CRC32C of a bytes-like `data`,
continuing from `value` (the crc32c package's function)."""
