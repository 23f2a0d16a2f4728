"""Names of a package loaded from their submodules on first use (PEP 562).

A package's `__init__` that re-exports its submodules' names would import
all of them, and with them asyncio, cryptography or rich, for any command
that only needs one; the CLI's start-up depends on not doing that.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing)
if TYPE_CHECKING:
    from typing import Any, Callable


def lazy_getattr(package: str, homes: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that imports each name of `homes`
    (name -> submodule) from its submodule when first asked for, and keeps it
    in `namespace` (the package's globals) so it is asked for only once."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        namespace[name] = value
        return value

    return __getattr__


def load_on_thread(module: str) -> None:
    """Import `module` on a daemon thread, ahead of its first use (an
    `import` of it elsewhere waits for this one to finish, under the
    module's import lock): for a command's work that is sure to need it
    once its peer answers, started when it would otherwise wait."""
    import sys

    if module not in sys.modules:
        import importlib
        import threading

        threading.Thread(target=importlib.import_module, args=(module,), daemon=True,
                         name=f"gannet-load-{module}").start()
