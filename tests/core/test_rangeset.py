from hypothesis import given
from hypothesis import strategies as st

from gannet.core.rangeset import RangeSet

ops = st.lists(
    st.tuples(st.sampled_from(["add", "sub", "below"]), st.integers(0, 200), st.integers(0, 60)),
    max_size=40,
)


@given(ops)
def test_matches_a_set_of_integers(operations):
    rs, model = RangeSet(), set()
    for op, start, length in operations:
        end = start + length
        if op == "add":
            assert rs.add(start, end) == len(set(range(start, end)) - model)
            model |= set(range(start, end))
        elif op == "sub":
            assert rs.subtract(start, end) == len(set(range(start, end)) & model)
            model -= set(range(start, end))
        else:
            rs.discard_below(start)
            model = {x for x in model if x >= start}
        assert rs.total == len(model)
        flat = {x for s, e in rs for x in range(s, e)}
        assert flat == model
        pairs = rs.ranges()
        assert all(s < e for s, e in pairs)
        assert all(pairs[i][1] < pairs[i + 1][0] for i in range(len(pairs) - 1))  # disjoint, not touching
    for probe in range(0, 270, 7):
        assert (probe in rs) == (probe in model)
        assert rs.count_above(probe) == len([x for x in model if x >= probe])
        gaps = {x for s, e in rs.gaps(probe, probe + 30) for x in range(s, e)}
        assert gaps == set(range(probe, probe + 30)) - model


def test_merge_and_split():
    rs = RangeSet([(0, 10), (20, 30)])
    rs.add(10, 20)
    assert rs.ranges() == [(0, 30)]
    rs.subtract(5, 25)
    assert rs.ranges() == [(0, 5), (25, 30)]
    assert rs.range_containing(27) == (25, 30)
    assert rs.range_containing(10) is None
