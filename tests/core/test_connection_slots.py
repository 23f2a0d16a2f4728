"""Connection keeps its per-connection state in slots (memory at scale).

An instance dict holding Connection's ~80 attributes costs about 3 KB per
connection; slots cost 8 bytes each. `__dict__` is kept as a fallback, so an
attribute set outside `__init__` still works, but everything `__init__` sets
must have a slot or the saving is lost without any test failing.
"""

from __future__ import annotations

import ast
import inspect
import random

import pytest

from gannet.config import Config
from gannet.core import connection
from gannet.core.connection import Connection

# What slots buy is a pure-Python matter: the compiled class keeps its
# attributes in a C struct and has neither __slots__ nor a __dict__.
pytestmark = pytest.mark.pure


def init_attributes() -> list[str]:
    tree = ast.parse(inspect.getsource(connection))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Connection")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    names = []
    for node in ast.walk(init):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        for t in targets:
            for e in t.elts if isinstance(t, ast.Tuple) else [t]:
                if (isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name)
                        and e.value.id == "self"):
                    names.append(e.attr)
    return names


def test_every_init_attribute_has_a_slot():
    missing = sorted(set(init_attributes()) - set(Connection.__slots__))
    assert not missing, f"add to Connection.__slots__: {missing}"


def test_fresh_connection_has_no_instance_dict_entries():
    conn = Connection(Config(), random.Random(1), 0.0, remote_addr=("127.0.0.1", 1), local_cid=7)
    assert conn.__dict__ == {}
