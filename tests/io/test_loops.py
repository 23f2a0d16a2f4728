"""The loop Gannet's own programs run on: uvloop when installed, unless switched off."""

import asyncio

import pytest

from gannet.io import loops


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_run_uses_asyncio_loop_when_switched_off(monkeypatch):
    monkeypatch.setenv("GANNET_NO_UVLOOP", "1")
    assert loops.run(_loop_module()).startswith("asyncio")


def test_run_uses_uvloop_when_installed(monkeypatch):
    pytest.importorskip("uvloop")  # a test dependency: never skipped in CI
    monkeypatch.delenv("GANNET_NO_UVLOOP", raising=False)
    assert loops.run(_loop_module()).startswith("uvloop")


def test_run_returns_the_result_and_raises_what_main_raises(monkeypatch):
    monkeypatch.setenv("GANNET_NO_UVLOOP", "1")

    async def fails() -> None:
        raise KeyError("x")

    async def answer() -> int:
        return 42

    assert loops.run(answer()) == 42
    with pytest.raises(KeyError):
        loops.run(fails())


def test_cli_programs_run_on_gannets_loop():
    import inspect

    from gannet.cli import bench, chat, client, receive, send, server, tunnel

    for mod in (bench, chat, client, receive, send, server, tunnel):
        src = inspect.getsource(mod)
        assert "asyncio.run(" not in src, mod.__name__
        assert "run_loop(" in src, mod.__name__
