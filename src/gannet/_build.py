"""Which build of the core runs: compiled (mypyc) or pure Python.

The modules in MODULES are compiled by setup.py from their Python source,
when a C compiler is there; the compiled copy sits beside the .py and
Python's importer prefers it. Both builds are the same program: the .py is
the source of truth, and the pure build stays complete.

`GANNET_PURE=1` selects the pure build: a finder placed in front of the
importer loads these modules from their .py. The selection is all or
nothing (compiled modules call each other's native classes directly, so a
mix would hand one build's objects to the other's code), and it is made
once, before the first of them is imported (`gannet/__init__.py`).

In a source checkout (an editable install) a compiled copy older than its
source is not used: after an edit the program runs the edit, pure, with a
one-line notice until the next `pip install -e .`.

This module imports only the standard library: setup.py reads MODULES from
it without importing the package.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from importlib.util import spec_from_file_location

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing: `import gannet` stays light)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

# The hot path of every datagram: the endpoint (demultiplexing, the timer
# heap), the connection and its parts, the range sets and send buffer,
# congestion control, the wire encoding, and sealing (with the sealed
# envelope's helpers, called once per row where `cryptography` seals).
MODULES = (
    "gannet.core.endpoint",
    "gannet.core.connection",
    "gannet.core.receiver",
    "gannet.core.sender",
    "gannet.core.recovery",
    "gannet.core.timers",
    "gannet.core.states",
    "gannet.core.rangeset",
    "gannet.core.sendbuf",
    "gannet.core.rtt",
    "gannet.core.stats",
    "gannet.core.cc.base",
    "gannet.core.cc.bbr",
    "gannet.core.cc.cubic",
    "gannet.core.cc.hystart",
    "gannet.core.cc.newreno",
    "gannet.wire.segment",
    "gannet.wire.datagram",
    "gannet.wire.protected",
    # packet protection's per-datagram and per-batch glue (the AEAD itself
    # is OpenSSL's, through cryptography or gannet.crypto._rows)
    "gannet.crypto.protection",
    # the security layer's endpoint (sealing and opening at the datagram
    # boundary): native subclasses of the core's Endpoint, so that the
    # core's and the adapter's calls into them are native calls
    # (docs/design.md, "The security layer compiled")
    "gannet.crypto.endpoint",
    # the limit accounting of Gannet's commands (on for their stats socket):
    # read after every output pass of every connection, so per message it
    # ran as much Python as the rest of the pass (docs/design.md, "The
    # tunnel's per-request cost")
    "gannet.observe.limits",
    # the asyncio streams' per-message path: the reader (a class of its own,
    # not an asyncio.StreamReader subclass, so that its attributes are
    # native) and the glue that is each connection's event handler and the
    # writer's write and drain (docs/design.md, "The small-message path")
    "gannet.io.reader",
    "gannet.io.stream",
    # the asyncio adapter's per-datagram path (the read, the pass, the
    # one-datagram send, dispatch, the timer check): AioEndpoint's native
    # base class, holding the state every message reads
    "gannet.io.datapath",
    # the blocking Socket's per-call path (send, recv and the wait that
    # drives the endpoint): Socket's native base class, and the
    # per-connection waiter its events update (docs/design.md, "What a
    # blocking `Socket` round trip costs")
    "gannet.io.sockpath",
    # the tunnel's mux mode per request: a channel's from_tcp (which the
    # loop calls for each TCP read: TcpSide hands its data_received over)
    # and to_tcp, the frame parser and the credit accounting, native
    # classes calling each other directly (docs/design.md, "Many TCP connections over one Gannet connection")
    "gannet.apps.tunnel_mux",
)

# C extensions of the project's own, each with its Python equivalent beside
# it (which runs when the extension is not built, cannot load, or under
# GANNET_PURE=1): module -> its C source, relative to the package.
EXTENSIONS = {
    "gannet.crypto._rows": "crypto/_rows.c",  # the AEAD over a train's or batch's rows
    "gannet.wire._batch": "wire/_batch.c",  # a train's rows written, a batch's rows checked and joined
}

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def pure_requested() -> bool:
    return os.environ.get("GANNET_PURE", "") not in ("", "0")


def _source(name: str) -> str:
    return os.path.join(_PACKAGE_DIR, *name.split(".")[1:]) + ".py"


def _compiled(name: str) -> str | None:
    base = _source(name)[: -len(".py")]
    for suffix in EXTENSION_SUFFIXES:
        if os.path.exists(base + suffix):
            return base + suffix
    return None


def stale_modules() -> list[str]:
    """Compiled modules older than their source, in a source checkout (a
    wheel's files carry no meaningful times, so only there is it checked)."""
    root = os.path.dirname(os.path.dirname(_PACKAGE_DIR))
    if not os.path.exists(os.path.join(root, "pyproject.toml")):
        return []
    out = []
    for name in MODULES:
        so = _compiled(name)
        if so is not None and os.path.getmtime(_source(name)) > os.path.getmtime(so):
            out.append(name)
    return out


def extension(name: str) -> ModuleType | None:
    """The C extension `name` (one of EXTENSIONS), or None when its Python
    equivalent must run: GANNET_PURE=1, not built, unable to load (its
    library missing), or, in a source checkout, older than its C source
    (then with a one-line notice until the next `pip install -e .`)."""
    if pure_requested():
        return None
    so = _compiled(name)
    if so is None:
        return None
    root = os.path.dirname(os.path.dirname(_PACKAGE_DIR))
    source = os.path.join(_PACKAGE_DIR, EXTENSIONS[name])
    if (os.path.exists(os.path.join(root, "pyproject.toml")) and os.path.exists(source)
            and os.path.getmtime(source) > os.path.getmtime(so)):
        sys.stderr.write(f"gannet: {EXTENSIONS[name]} is newer than its build: using its Python "
                         "equivalent (rebuild with `pip install -e .`)\n")
        return None
    from importlib import import_module

    try:
        return import_module(name)
    except ImportError:
        return None


class SourceFirst:
    """A meta-path finder that loads MODULES from their .py files."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname not in MODULES:
            return None
        src = _source(fullname)
        return spec_from_file_location(fullname, src) if os.path.exists(src) else None


def select() -> None:
    """Choose the build, once, before any of MODULES is imported."""
    if any(isinstance(f, SourceFirst) for f in sys.meta_path):
        return
    if pure_requested():
        sys.meta_path.insert(0, SourceFirst())
        return
    stale = stale_modules()
    if stale:
        sys.stderr.write(
            f"gannet: the compiled core is older than {stale[0].replace('.', '/')}.py: running pure Python "
            "(rebuild with `pip install -e .`)\n"
        )
        sys.meta_path.insert(0, SourceFirst())


def build() -> str:
    """"compiled" or "pure": the build of the core this process runs."""
    from .core import connection

    path = connection.__file__ or ""
    return "compiled" if path.endswith(tuple(EXTENSION_SUFFIXES)) else "pure"
