"""The sans-I/O rule: wire/ and core/ never touch sockets, clocks, threads or global randomness."""

import ast
import pathlib

import gannet

FORBIDDEN_MODULES = {"socket", "time", "asyncio", "threading", "selectors", "select", "os", "datetime"}
SRC = pathlib.Path(gannet.__file__).parent


def test_core_and_wire_import_no_io():
    offenders = []
    for package in ("wire", "core"):
        for path in (SRC / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module.split(".")[0]]
                for name in names:
                    if name in FORBIDDEN_MODULES:
                        offenders.append(f"{path.relative_to(SRC)} imports {name}")
    assert not offenders, offenders


def test_core_uses_no_global_random_source():
    offenders = []
    for path in (SRC / "core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "random"
                and node.attr != "Random"
            ):
                offenders.append(f"{path.relative_to(SRC)} uses random.{node.attr}")
    assert not offenders, offenders
