"""The core's events: small frozen dataclasses, each naming its connection.

The events that add no field to Event are plain subclasses of it (its
dataclass methods serve them; decorating each again only made the same
methods anew at every start): they must behave as decorated ones did.
"""

import dataclasses
import inspect

import pytest

from gannet.core import events
from gannet.crypto.refused import HandshakeRefused

ALL = [cls for _, cls in inspect.getmembers(events, inspect.isclass)
       if issubclass(cls, events.Event)] + [HandshakeRefused]
FIELDLESS = [events.ConnectionEstablished, events.ConnectionAvailable, events.DataReceived,
             events.StreamEnded, events.SendSpaceAvailable, events.AllDataAcknowledged]


def test_the_list_is_whole():
    assert set(FIELDLESS) == {cls for cls in ALL if cls is not events.Event
                              and not cls.__dict__.get("__annotations__")}
    assert events.ConnectionTerminated in ALL and len(ALL) == 9


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_each_event_is_a_frozen_dataclass_naming_its_connection(cls):
    conn = object()
    ev = cls(conn)
    assert dataclasses.is_dataclass(ev) and ev.conn is conn
    assert [f.name for f in dataclasses.fields(ev)][0] == "conn"
    assert repr(ev).startswith(f"{cls.__name__}(conn=")
    assert ev.__match_args__[0] == "conn"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.conn = object()
    with pytest.raises(dataclasses.FrozenInstanceError):
        del ev.conn
    with pytest.raises(AttributeError):
        ev.anything_else = 1
    assert not hasattr(ev, "anything_else")
    assert ev != cls(conn) and ev == ev  # compared by identity (eq=False), and hashable
    assert hash(ev) == hash(ev)
    with pytest.raises(TypeError):
        cls()  # conn is required


@pytest.mark.parametrize("cls", FIELDLESS, ids=lambda c: c.__name__)
def test_a_fieldless_event_uses_events_own_methods(cls):
    """Not decorated again: no __init__, __repr__ or __setattr__ of its own
    (each would be made at import), and no instance dict."""
    assert not {"__init__", "__repr__", "__setattr__", "__delattr__"} & set(cls.__dict__)
    assert cls.__slots__ == ()
    assert not hasattr(cls(None), "__dict__")
    assert dataclasses.fields(cls) == dataclasses.fields(events.Event)


def test_events_copy_and_pickle_with_their_fields():
    import copy
    import pickle

    for event in [cls(conn="c") for cls in FIELDLESS] + [
            events.ConnectionTerminated(conn="c", error=ValueError("x"))]:
        for twin in (copy.copy(event), copy.deepcopy(event), pickle.loads(pickle.dumps(event))):
            assert type(twin) is type(event) and twin.conn == "c"
    twin = copy.deepcopy(events.ConnectionTerminated(conn="c", error=ValueError("x")))
    assert isinstance(twin.error, ValueError) and twin.error.args == ("x",)
