"""Config: every field documented (in the source and in docs/protocol.md), and
bad values rejected with the standard exceptions, naming the field."""

import ast
import inspect
import math
import pathlib

import pytest

from gannet import config as config_module
from gannet.config import Config

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_every_field_has_a_docstring_in_the_source():
    cls = next(n for n in ast.parse(inspect.getsource(config_module)).body
               if isinstance(n, ast.ClassDef) and n.name == "Config")
    undocumented = []
    for node, after in zip(cls.body, cls.body[1:] + [None]):
        if isinstance(node, ast.AnnAssign):
            doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) \
                and isinstance(after.value.value, str)
            if not doc:
                undocumented.append(node.target.id)
    assert not undocumented, f"fields without a docstring: {undocumented}"


def test_every_field_is_in_the_configuration_table():
    section = DOC.read_text().split("## Configuration", 1)[1]
    missing = [name for name in Config.names() if f"| `{name}` |" not in section]
    assert not missing, f"docs/protocol.md's Configuration table lacks {missing}"


def test_seed_names_are_fields():
    assert {"mss", "window_size", "timeout", "max_retries", "fast_retransmit_threshold"} <= set(Config.names())


@pytest.mark.parametrize("changes, exc, field", [
    (dict(mss="1400"), TypeError, "mss"),
    (dict(mss=1400.0), TypeError, "mss"),
    (dict(sack=1), TypeError, "sack"),
    (dict(timeout=True), TypeError, "timeout"),
    (dict(idle_timeout="soon"), TypeError, "idle_timeout"),
    (dict(timeout=math.nan), ValueError, "timeout"),
    (dict(max_rto=math.inf), ValueError, "max_rto"),
    (dict(mss=10), ValueError, "mss"),
    (dict(mode="fast"), ValueError, "mode"),
    (dict(congestion_control="vegas"), ValueError, "congestion_control"),
    (dict(fast_retransmit_threshold=0), ValueError, "thresholds"),
    (dict(max_retries=0), ValueError, "retry"),
    (dict(ack_delay=0.5), ValueError, "ack_delay"),
    (dict(min_rto=2.0, max_rto=1.0), ValueError, "min_rto"),
    (dict(initial_window=0), ValueError, "initial_window"),
    (dict(keepalive_idle=0), ValueError, "keepalive_idle"),
    (dict(keepalive_interval=-1.0), ValueError, "keepalive_interval"),
    (dict(keepalive_count=0), ValueError, "keepalive_count"),
    (dict(idle_timeout=0), ValueError, "idle_timeout"),
    (dict(connect_timeout=0), ValueError, "connect_timeout"),
    (dict(msl=-1), ValueError, "msl"),
    (dict(paws_window=0), ValueError, "paws_window"),
    (dict(backlog=0), ValueError, "backlog"),
    (dict(max_packet_size=64), ValueError, "max_packet_size"),
    (dict(window_size=100), ValueError, "window_size"),
])
def test_bad_settings_raise_and_name_the_field(changes, exc, field):
    with pytest.raises(exc, match=field):
        Config(**changes)


def test_good_settings_are_kept():
    cfg = Config(mss=1200, timeout=2, idle_timeout=30, congestion_control="newreno", max_packet_size=1400)
    assert (cfg.mss, cfg.timeout, cfg.idle_timeout, cfg.congestion_control) == (1200, 2, 30, "newreno")
    assert cfg.with_(sack=False).sack is False
    with pytest.raises(ValueError, match="backlog"):
        cfg.with_(backlog=-5)
