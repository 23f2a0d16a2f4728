import pytest

from gannet.io.endpoint import make_config


def test_mtu_pins_the_datagram_size():
    cfg = make_config(None, {"mtu": 1400})
    assert cfg.max_datagram_size == 1400 and cfg.pmtud is False


def test_max_datagram_size_alone_keeps_pmtud_and_a_consistent_ceiling():
    cfg = make_config(None, {"max_datagram_size": 9000})
    assert cfg.pmtud is True and cfg.pmtud_max >= 9000


def test_an_mtu_that_is_no_int_is_rejected_by_config_with_its_name():
    # (it once reached max() first, whose error named neither the setting nor the value)
    with pytest.raises(TypeError, match="max_datagram_size must be int, not '1400'"):
        make_config(None, {"mtu": "1400"})


def test_unknown_setting_is_a_type_error():
    with pytest.raises(TypeError, match="unknown Gannet setting"):
        make_config(None, {"nonsense": 1})


def test_big_datagrams_go_with_dont_fragment_and_small_ones_without():
    import socket

    from gannet.io.endpoint import IP_MTU_DISCOVER, PMTUDISC_PROBE, make_udp_socket, set_dont_fragment

    sock = make_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
    try:
        assert sock.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER) != PMTUDISC_PROBE
        assert set_dont_fragment(sock, True)
        assert sock.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER) == PMTUDISC_PROBE
        set_dont_fragment(sock, False)
        assert sock.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER) != PMTUDISC_PROBE
    finally:
        sock.close()


def test_every_default_is_of_its_fields_type():
    """Config's type check passes over a field that holds its default: each
    default must be of the type its annotation names (read here the way
    typing reads them all)."""
    import dataclasses
    import math
    import typing

    from gannet.config import Config

    hints = typing.get_type_hints(Config)
    assert len(hints) == len(dataclasses.fields(Config))
    for f in dataclasses.fields(Config):
        allowed = typing.get_args(hints[f.name]) or (hints[f.name],)
        value = f.default
        assert value is not dataclasses.MISSING, f.name
        if bool in allowed:
            assert isinstance(value, bool) or (value is None and type(None) in allowed), f.name
        elif value is not None or type(None) not in allowed:
            assert isinstance(value, allowed) and not isinstance(value, bool), f.name
            if isinstance(value, float):
                assert math.isfinite(value), f.name


@pytest.mark.parametrize("field, value", [
    ("mss", True), ("mss", 1.5), ("pmtud", 1), ("idle_timeout", "30"), ("code", 7),
    ("congestion_control", None), ("timeout", float("inf")),
])
def test_a_setting_of_the_wrong_type_is_refused_with_its_name(field, value):
    from gannet.config import Config

    with pytest.raises((TypeError, ValueError), match=f"Config.{field} must be"):
        Config(**{field: value})
    with pytest.raises((TypeError, ValueError), match=f"Config.{field} must be"):
        Config().with_(**{field: value})  # (every other field at its default)
