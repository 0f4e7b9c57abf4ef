"""Aggregators: add-then-result equals a brute force, merges combine in any grouping,
states survive encode/decode, and the sketches keep their stated error bounds."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import reduce
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfs import statecodec
from streamfs.aggregators import (
    AGGREGATORS,
    AnyAggregator,
    Count,
    CountDistinct,
    First,
    Last,
    Max,
    Mean,
    Min,
    Percentile,
    StateDecodeError,
    Stddev,
    Sum,
    Variance,
    make,
    merger,
)

ints = st.integers(min_value=-(10**12), max_value=10**12)
floats = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
numbers = st.one_of(ints, floats)
scalars = st.one_of(ints, floats, st.text(max_size=8), st.booleans())


def fold(aggregator: AnyAggregator, values: Sequence[Any]) -> Any:
    return reduce(aggregator.add, values, aggregator.initial())


def exact_pvariance(values: Sequence[float]) -> Fraction:
    return statistics.pvariance([Fraction(v) for v in values])


def assert_variance_close(got: float | None, values: Sequence[float]) -> None:
    """Welford/Chan in float64 against the exact rational variance.

    Each step rounds a deviation ``x - mean`` whose error is a few ulps of
    ``max|x|``; squared into M2 that is ``~ n * eps * max|x| * spread`` absolute, so
    allow ``64 * n * eps * (max|x| * spread + spread**2)`` plus a relative ``1e-12``.
    Sum-of-squares subtraction misses this by ``~ eps * max|x|**2``: for values near
    1e9 with spread 1 that is ~100, against a bound of ~1e-4 here. Below ``2**-1000``
    nothing is asserted: squares of such spreads underflow float64.
    """
    if not values:
        assert got is None
        return
    assert got is not None
    exact = exact_pvariance(values)
    spread = float(max(values)) - float(min(values))
    scale = max(abs(v) for v in values)
    eps = 2.0**-52
    tiny = 2.0**-1000  # squares of tiny spreads underflow: nothing smaller is representable
    bound = 64 * len(values) * eps * (scale * spread + spread**2) + 1e-12 * float(exact) + tiny
    assert abs(Fraction(got) - exact) <= Fraction(bound), (got, float(exact), bound)


BRUTE: dict[str, tuple[AnyAggregator, Callable[[list[Any]], Any]]] = {
    "count": (Count(), len),
    "sum_int": (Sum(), sum),
    "min": (Min(), lambda xs: min(xs) if xs else None),
    "max": (Max(), lambda xs: max(xs) if xs else None),
}


@given(st.lists(ints, max_size=60))
def test_exact_aggregators_equal_brute_force(values: list[int]) -> None:
    for aggregator, brute in BRUTE.values():
        assert aggregator.result(fold(aggregator, values)) == brute(values)
    mean = Mean().result(fold(Mean(), values))
    assert mean == (sum(values) / len(values) if values else None)


@given(st.lists(floats, max_size=60))
def test_float_sum_and_mean_within_rounding(values: list[float]) -> None:
    total = Sum().result(fold(Sum(), values))
    # Left-to-right float adds: error <= n * eps * sum|x| (Higham), vs fsum's exact rounding.
    bound = len(values) * 2.0**-52 * sum(map(abs, values)) + 1e-300
    assert abs(total - math.fsum(values)) <= bound
    mean = Mean().result(fold(Mean(), values))
    if values:
        assert mean is not None
        assert abs(mean - math.fsum(values) / len(values)) <= bound / len(values) + 1e-300
    else:
        assert mean is None


@given(st.lists(numbers, max_size=60))
def test_variance_and_stddev_equal_exact_rational(values: list[float]) -> None:
    assert_variance_close(Variance().result(fold(Variance(), values)), values)
    stddev = Stddev().result(fold(Stddev(), values))
    variance = Variance().result(fold(Variance(), values))
    assert stddev == (None if variance is None else math.sqrt(variance))


@given(
    st.floats(min_value=1e8, max_value=1e10, allow_nan=False),
    st.lists(st.integers(min_value=-3, max_value=3), min_size=1, max_size=200),
    st.integers(min_value=1, max_value=5),
)
def test_variance_accurate_for_large_values_small_spread(
    base: float, offsets: list[int], pieces: int
) -> None:
    values = [base + k for k in offsets]
    chunks = [values[i::pieces] for i in range(pieces)]
    merged = reduce(Variance().merge, [fold(Variance(), c) for c in chunks])
    for state in (fold(Variance(), values), merged):
        assert_variance_close(Variance().result(state), values)


def test_variance_large_values_example() -> None:
    values = [1e9 + x for x in (4.0, 7.0, 13.0, 16.0)]
    assert Variance().result(fold(Variance(), values)) == pytest.approx(22.5, abs=1e-6)
    naive = sum(v * v for v in values) / 4 - (sum(values) / 4) ** 2
    assert abs(naive - 22.5) > 1  # what sum-of-squares subtraction would have said


def split3(values: list[Any], data: st.DataObject) -> tuple[list[Any], list[Any], list[Any]]:
    i = data.draw(st.integers(0, len(values)))
    j = data.draw(st.integers(i, len(values)))
    return values[:i], values[i:j], values[j:]


EXACT_MERGES: list[AnyAggregator] = [Count(), Sum(), Min(), Max(), Mean(), CountDistinct()]


@given(st.lists(ints, max_size=60), st.data())
def test_merge_associative_commutative_exact(values: list[int], data: st.DataObject) -> None:
    for aggregator in EXACT_MERGES:
        a, b, c = (fold(aggregator, part) for part in split3(values, data))
        whole = aggregator.result(fold(aggregator, values))
        merge, result = aggregator.merge, aggregator.result
        assert result(merge(merge(a, b), c)) == whole
        assert result(merge(a, merge(b, c))) == whole
        assert result(merge(b, a)) == result(merge(a, b))
        assert result(merge(aggregator.initial(), a)) == result(a)


@given(st.lists(floats, max_size=60), st.data())
def test_merge_associative_variance(values: list[float], data: st.DataObject) -> None:
    v = Variance()
    a, b, c = (fold(v, part) for part in split3(values, data))
    for state in (v.merge(v.merge(a, b), c), v.merge(a, v.merge(b, c)), v.merge(v.merge(c, a), b)):
        assert state[0] == len(values)
        assert_variance_close(v.result(state), values)


# Few times and offsets, so many ties; (time, offset) names one event, hence one value.
stamped = st.tuples(st.integers(0, 20), st.integers(0, 3)).map(lambda k: (*k, k[0] * 7 - k[1]))


@given(st.lists(stamped, max_size=40), st.data())
def test_first_last_by_time_then_offset(
    events: list[tuple[int, int, int]], data: st.DataObject
) -> None:
    first, last = First(), Last()
    expected_first = min(events)[2] if events else None
    expected_last = max(events)[2] if events else None
    assert first.result(fold(first, events)) == expected_first
    assert last.result(fold(last, events)) == expected_last
    shuffled = data.draw(st.permutations(events))
    for aggregator, expected in ((first, expected_first), (last, expected_last)):
        a, b, c = (fold(aggregator, part) for part in split3(shuffled, data))
        assert aggregator.result(aggregator.merge(aggregator.merge(c, b), a)) == expected
        assert aggregator.result(aggregator.merge(a, aggregator.merge(b, c))) == expected


def test_last_tie_on_time_goes_to_higher_offset() -> None:
    last, first = Last(), First()
    events = [(100, 7, "b"), (100, 3, "a"), (99, 9, "z")]
    assert last.result(fold(last, events)) == "b"
    assert first.result(fold(first, events)) == "z"
    assert first.result(fold(first, events[:2])) == "a"


ROUND_TRIP: list[tuple[AnyAggregator, st.SearchStrategy[Any]]] = [
    (Count(), ints),
    (Sum(), numbers),
    (Sum(), st.integers(min_value=-(10**30), max_value=10**30)),
    (Mean(), numbers),
    (Variance(), numbers),
    (Stddev(), numbers),
    (Min(), numbers),
    (Min(), st.text(max_size=8)),
    (Max(), numbers),
    (Max(), st.booleans()),
    (First(), st.tuples(ints, ints, scalars)),
    (Last(), st.tuples(ints, ints, st.text(max_size=8))),
    (CountDistinct(exact_limit=20), scalars),
    (Percentile(0.9), floats),  # within k: exact, so merges compare equal
    (Percentile(0.9, k=8), st.just(1.5)),  # past k: one value keeps it deterministic
]


@pytest.mark.parametrize(("aggregator", "strategy"), ROUND_TRIP, ids=lambda x: repr(x)[:30])
@settings(max_examples=60)
@given(data=st.data())
def test_encode_decode_round_trip(
    aggregator: AnyAggregator, strategy: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    values = data.draw(st.lists(strategy, max_size=40))
    state = fold(aggregator, values)
    encoded = aggregator.encode(state)
    assert encoded[0] == 1  # the version byte
    decoded = aggregator.decode(encoded)
    assert aggregator.result(decoded) == aggregator.result(state)
    if isinstance(state, int | float | tuple) or state is None:
        assert decoded == state
        assert aggregator.encode(decoded) == encoded
    elif isinstance(state, set):
        assert decoded == state  # bytes follow set order, which hashing may change
    # A decoded state keeps working: adds and merges as the original would.
    more = fold(aggregator, values[:3])
    assert aggregator.result(aggregator.merge(decoded, more)) == aggregator.result(
        aggregator.merge(state, more)
    )


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_decode_refuses_bad_bytes(name: str) -> None:
    aggregator = AGGREGATORS[name]()
    good = aggregator.encode(aggregator.initial())
    with pytest.raises(StateDecodeError):
        aggregator.decode(b"")
    with pytest.raises(StateDecodeError):
        aggregator.decode(bytes([9]) + good[1:])
    with pytest.raises(StateDecodeError):
        aggregator.decode(good + b"\x00")


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_empty_values(name: str) -> None:
    aggregator = AGGREGATORS[name]()
    expected = 0 if name in {"count", "sum", "count_distinct"} else None
    assert aggregator.result(aggregator.initial()) == expected


def test_make_parses_percentiles_and_names_unknowns() -> None:
    assert make("p95") == Percentile(0.95)
    assert make("p99.9") == Percentile(0.999)
    assert make("p100") == Percentile(1.0)
    assert make("count") == Count()
    with pytest.raises(ValueError, match=r"median.*known: count"):
        make("median")


# --- count_distinct: exact up to the limit, HLL within its bound past it ---------------


@given(
    st.lists(
        st.one_of(st.integers(0, 300), st.sampled_from(["a", "b", 1.0, 2.5, True])), max_size=300
    )
)
def test_count_distinct_exact_up_to_limit(values: list[Any]) -> None:
    aggregator = CountDistinct(exact_limit=1_000)
    assert aggregator.result(fold(aggregator, values)) == len(set(values))


@given(st.sets(st.text(max_size=12), max_size=30))
def test_count_distinct_encodes_a_set_of_strings_as_any_set(values: set[str]) -> None:
    # A set of strings only takes a shorter path to the same bytes: count, then each
    # member as a tagged scalar in the canonical order.
    members = sorted(values, key=lambda v: (type(v).__name__, v))
    expected = b"".join(
        [
            statecodec.VERSION_BYTE,
            b"e",
            statecodec.encode_u64(len(values)),
            *map(statecodec.encode_scalar, members),
        ]
    )
    aggregator = CountDistinct()
    assert aggregator.encode(values) == expected
    assert aggregator.decode(expected) == values


@pytest.mark.parametrize("distinct", [1_001, 2_500, 10_000, 100_000])
def test_count_distinct_past_limit_within_bound(distinct: int) -> None:
    aggregator = CountDistinct()
    rng = random.Random(distinct)
    values = [rng.getrandbits(48) for _ in range(distinct)]
    values += values[: distinct // 3]  # repeats must not count
    rng.shuffle(values)
    single = fold(aggregator, values)
    thirds = reduce(aggregator.merge, [fold(aggregator, values[i::3]) for i in range(3)])
    round_tripped = aggregator.decode(aggregator.encode(thirds))
    bound = aggregator.relative_error(3)  # 3 sigmas: ~3.9% for lg_k 12
    assert 0 < bound < 0.05
    for state in (single, thirds, round_tripped):
        assert abs(aggregator.result(state) - distinct) <= bound * distinct


def test_count_distinct_merge_of_exact_sets_switches_to_hll() -> None:
    aggregator = CountDistinct(exact_limit=10)
    a, b = fold(aggregator, range(8)), fold(aggregator, range(5, 13))
    assert isinstance(aggregator.merge(a, b), set) is False
    assert aggregator.result(aggregator.merge(a, b)) == 13  # HLL is exact this small
    assert a == set(range(8))  # merge left its inputs alone


# --- percentiles: exact up to k values, within the KLL rank bound past it ---------------


def exact_quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]


@given(
    st.lists(floats, min_size=1, max_size=200),
    st.sampled_from([0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0]),
    st.data(),
)
def test_percentile_exact_up_to_k(values: list[float], q: float, data: st.DataObject) -> None:
    aggregator = Percentile(q, k=200)
    assert aggregator.result(fold(aggregator, values)) == exact_quantile(values, q)
    a, b, c = (fold(aggregator, part) for part in split3(values, data))
    merged = aggregator.merge(aggregator.merge(a, b), c)
    assert aggregator.result(merged) == exact_quantile(values, q)


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_percentile_past_k_within_rank_bound(q: float) -> None:
    aggregator = Percentile(q)
    rng = random.Random(int(q * 100))
    values = [rng.lognormvariate(3, 1) for _ in range(50_000)]
    state = reduce(aggregator.merge, [fold(aggregator, values[i::7]) for i in range(7)])
    got = aggregator.result(aggregator.decode(aggregator.encode(state)))
    assert got is not None
    rank = sum(v < got for v in values) / len(values)
    assert abs(rank - q) <= aggregator.rank_error()  # ~1.3% for k 200


@given(st.lists(st.lists(numbers, max_size=5), max_size=12))
def test_merging_a_list_of_states_equals_folding_merge(tiles: list[list[float]]) -> None:
    """The query path merges a window's tile states at once (``merger``): the same value,
    to the last bit, as folding ``merge`` tile by tile, for every aggregator."""
    for name in ("count", "sum", "mean", "variance", "min", "max", "count_distinct"):
        aggregator = make(name)
        states = [fold(aggregator, values) for values in tiles]
        folded = reduce(aggregator.merge, states, aggregator.initial())
        merged = merger(aggregator)(states)
        assert aggregator.result(merged) == aggregator.result(folded), name
    # At most 60 values: below the KLL sketch's k, so nothing is compacted (randomly).
    p95 = Percentile(0.95)
    sketches = [fold(p95, values) for values in tiles]
    folded_sketch = reduce(p95.merge, sketches, p95.initial())
    assert p95.result(merger(p95)(sketches)) == p95.result(folded_sketch)
