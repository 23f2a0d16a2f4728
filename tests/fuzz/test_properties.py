"""Every decoder under hypothesis: the checks of targets.py on arbitrary
bytes, and on the seed corpus's valid inputs with bytes changed, inserted,
cut off or spliced (the same starting points the atheris harnesses use)."""

from __future__ import annotations

from pathlib import Path

import pytest
import targets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CORPUS = Path(__file__).parent / "corpus"
# The endpoint and handshake checks build endpoints per example, and batch
# seeds are up to 4 KiB of rows to decode: fewer examples.
EXAMPLES = {"endpoint": 150, "handshake": 200, "batch": 200}


def seeds(name: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((CORPUS / name).iterdir())]


@st.composite
def mutated(draw, name: str) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds(name))))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["set", "insert", "delete", "splice"]))
        at = draw(st.integers(0, len(data)))
        if op == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "splice":
            other = draw(st.sampled_from(seeds(name)))
            start = draw(st.integers(0, len(other)))
            data[at:] = other[start:]
    return bytes(data)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_mutated_seeds_decode_or_raise_the_modules_error(name):
    @settings(max_examples=EXAMPLES.get(name, 400), suppress_health_check=[HealthCheck.too_slow])
    @given(mutated(name))
    def run(data):
        targets.TARGETS[name](data)

    run()


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_arbitrary_bytes_decode_or_raise_the_modules_error(name):
    @settings(max_examples=EXAMPLES.get(name, 300) // 2, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=600))
    def run(data):
        targets.TARGETS[name](data)

    run()


def test_every_target_has_seeds():
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(targets.TARGETS)
    assert all(len(seeds(name)) >= 2 for name in targets.TARGETS)
