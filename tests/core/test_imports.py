"""What importing a part of Gannet loads: the sans-I/O core without the
event loop or numpy, small messages without numpy, and config without the
core (no import cycle)."""

from __future__ import annotations

import subprocess
import sys


def loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_core_loads_neither_asyncio_nor_numpy():
    for statement in ("import gannet.core", "import gannet.core.connection", "import gannet.core.recovery"):
        modules = loaded_after(statement)
        assert not {"asyncio", "numpy", "gannet.io"} & modules, statement


# Two endpoints exchanging `n` bytes in one direction, in one process.
EXCHANGE = """
import random
from gannet.config import Config
from gannet.core.endpoint import Endpoint
a, b = Endpoint(Config(pmtud=False), random.Random(1)), Endpoint(Config(pmtud=False), random.Random(2))
b.listen()
ca = a.connect("B", 0.0)
def pump(now):
    for d, _ in a.datagrams_to_send(now, True):
        b.receive_batch(d, getattr(d, "size", 0), "A", now)
    for d, _ in b.datagrams_to_send(now, True):
        a.receive_batch(d, getattr(d, "size", 0), "B", now)
for i in range(3):
    pump(0.0)
cb = b.accept()
ca.send(bytes({n}))
got = 0
for i in range(1, 20):
    pump(i * 0.001)
    got += len(cb.recv(1 << 20))
assert got == {n}, got
"""


def test_the_endpoint_and_the_send_path_load_no_numpy():
    """numpy comes with the first run of many datagrams (wire/batch.py), not
    with the endpoint, the adapter or `gannet send`'s modules: start-up."""
    for statement in (
        "import gannet.core.endpoint",
        "import gannet.cli.send, gannet.apps.transfer.sender, gannet.io.aio, gannet.crypto.endpoint",
        EXCHANGE.format(n=64),
    ):
        assert "numpy" not in loaded_after(statement), statement
    # ... and a run of full-size datagrams loads it for the vector path,
    # unless the C rows primitive (gannet.wire._batch) does that work.
    from gannet.wire import batch

    assert ("numpy" in loaded_after(EXCHANGE.format(n=20 * 1400))) is (batch._c is None)


def test_config_does_not_import_the_core():
    modules = loaded_after("import gannet.config")
    assert not any(m.startswith("gannet.core") for m in modules)


def test_the_public_api_is_still_there_on_first_use():
    modules = loaded_after("import gannet; gannet.Socket; gannet.open_connection")
    assert {"gannet.io.blocking", "gannet.io.aio"} <= modules
    import gannet

    assert {"Socket", "open_connection", "start_server", "Server", "StreamWriter", "Config"} <= set(dir(gannet))


def test_a_registered_controller_is_accepted_by_config():
    from gannet.config import Config
    from gannet.core import cc
    from gannet.core.cc.newreno import NewReno

    class Probe(NewReno):
        name = "test-probe"

    cc.register(Probe)
    try:
        assert Config(congestion_control="test-probe").congestion_control == "test-probe"
    finally:
        cc._REGISTRY.pop("test-probe")
        from gannet.config import CONGESTION_CONTROLS

        CONGESTION_CONTROLS.discard("test-probe")


def test_the_checksum_skips_the_crc32c_packages_version_lookup():
    """The datagram checksum is the crc32c package's C function, loaded
    without the package's __init__ (which imports importlib.metadata, with
    email, zipfile and csv, to read its own version): start-up."""
    for statement in ("import gannet.wire.datagram", "import gannet.crypto.endpoint",
                      "import gannet.apps.messages.codec"):
        modules = loaded_after(statement)
        assert "importlib.metadata" not in modules, statement
        assert "crc32c._crc32c" in modules, statement
    # the same function as the package's, and a later `import crc32c` still works
    probe = ("from gannet.wire.checksum import crc32c\n"
             "import crc32c as package\n"
             "assert crc32c is package.crc32c, (crc32c, package.crc32c)\n"
             "assert crc32c(b'123456789') == 0xE3069283  # RFC 3720's check value\n"
             "assert crc32c(b'56789', crc32c(b'1234')) == 0xE3069283\n"
             "assert package.__version__\n")
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)
