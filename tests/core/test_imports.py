"""What importing a part of Gannet loads: the sans-I/O core without the
event loop or numpy, and config without the core (no import cycle)."""

from __future__ import annotations

import subprocess
import sys


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_core_loads_neither_asyncio_nor_numpy():
    for statement in ("import gannet.core", "import gannet.core.connection", "import gannet.core.recovery"):
        modules = loaded_after(statement)
        assert not {"asyncio", "numpy", "gannet.io"} & modules, statement


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
