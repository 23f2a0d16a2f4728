"""The security layer is sans-I/O like the core: no sockets, clocks or
threads anywhere in gannet.crypto, and the protocol modules (the key
exchange, packet protection, the secure endpoint, the envelope) touch no
files either; only identity, known_hosts and psk read the user's files."""

import ast
import pathlib

import gannet

SRC = pathlib.Path(gannet.__file__).parent
NO_IO = {"socket", "time", "asyncio", "threading", "selectors", "select", "datetime"}
NO_FILES = NO_IO | {"os", "pathlib", "io", "shutil", "tempfile"}
PROTOCOL = ("crypto/noise.py", "crypto/handshake.py", "crypto/protection.py", "crypto/endpoint.py",
            "crypto/code.py", "wire/protected.py")


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_crypto_imports_no_io():
    offenders = {str(p.relative_to(SRC)): _imports(p) & NO_IO for p in (SRC / "crypto").rglob("*.py")}
    assert not any(offenders.values()), offenders


def test_protocol_modules_touch_no_files():
    offenders = {name: _imports(SRC / name) & NO_FILES for name in PROTOCOL}
    assert not any(offenders.values()), offenders
