"""Property tests of the numpy engine's pieces against brute force: window index
ranges (both key encodings), prefix sums with nan/inf, variance, min/max (every
strategy), and the whole retrieval against DESIGN §3 read naively."""

from __future__ import annotations

import math
import statistics
import tempfile
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfs.definitions import Aggregation, FeatureView
from streamfs.ingest import Event
from streamfs.offline.extrema import window_extreme
from streamfs.offline.log import OfflineSink
from streamfs.offline.prefix import FloatSums, Runs, Timeline, pop_var, prefix, window_start
from streamfs.offline.retrieval import get_historical_features
from tests.definitions.helpers import USER, purchases
from tests.offline.helpers import T0, brute_force

HOP = 10
WINDOW = 30

# (entity, time) pairs: few entities and a short time range, so ties and empty
# windows are common; times may be negative (floor division must still floor).
events_st = st.lists(st.tuples(st.integers(0, 3), st.integers(-40, 60)), max_size=40)
queries_st = st.lists(st.tuples(st.integers(-1, 4), st.integers(-80, 120)), max_size=30)


def _sorted(events: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    pairs = sorted(events)
    entities = np.array([e for e, _ in pairs], np.int64)
    times = np.array([t for _, t in pairs], np.int64)
    return entities, times


def _bounds(
    timeline: Timeline, queries: list[tuple[int, int]], window: int, hop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    q = np.array([e for e, _ in queries], np.int64).reshape(-1)
    t = np.array([t for _, t in queries], np.int64).reshape(-1)
    valid = (q >= 0) & (q < 4)
    q = np.where(valid, q, 0)
    lo = timeline.find(q, window_start(t, window, hop), "left", valid)
    mid = timeline.find(q, t - t % hop, "left", valid)
    hi = timeline.find(q, t, "right", valid)
    return lo, mid, hi, valid


def _in_window(event: tuple[int, int], query: tuple[int, int], window: int, hop: int) -> bool:
    start = math.floor((query[1] - window) / hop) * hop
    return event[0] == query[0] and start <= event[1] <= query[1]


@settings(max_examples=200, deadline=None)
@given(events_st, queries_st, st.booleans())
def test_window_ranges_are_exactly_the_events_in_the_window(
    events: list[tuple[int, int]], queries: list[tuple[int, int]], compress: bool
) -> None:
    entities, times = _sorted(events)
    timeline = Timeline.build(entities, times, 4, key_limit=1 if compress else 2**62)
    assert (timeline.times is not None) == (compress and len(events) > 0)
    lo, mid, hi, _ = _bounds(timeline, queries, WINDOW, HOP)
    pairs = list(zip(entities.tolist(), times.tolist(), strict=True))
    for i, query in enumerate(queries):
        inside = [j for j, e in enumerate(pairs) if _in_window(e, query, WINDOW, HOP)]
        assert list(range(lo[i], hi[i])) == inside, (query, lo[i], hi[i], inside)
        assert lo[i] <= mid[i] <= hi[i]
        bucket = [j for j in inside if pairs[j][1] >= query[1] - query[1] % HOP]
        assert list(range(mid[i], hi[i])) == bucket


finite = st.floats(-1e6, 1e6, allow_nan=False)
special = st.sampled_from([math.nan, math.inf, -math.inf])


@settings(max_examples=150, deadline=None)
@given(events_st, queries_st, st.data())
def test_sums_variances_and_extremes_equal_brute_force(
    events: list[tuple[int, int]], queries: list[tuple[int, int]], data: st.DataObject
) -> None:
    entities, times = _sorted(events)
    with_specials = data.draw(st.booleans())
    values = np.array(
        data.draw(
            st.lists(
                st.one_of(finite, special) if with_specials else finite,
                min_size=len(events),
                max_size=len(events),
            )
        ),
        np.float64,
    )
    integers = np.array(
        data.draw(
            st.lists(st.integers(-(2**40), 2**40), min_size=len(events), max_size=len(events))
        ),
        np.int64,
    )
    timeline = Timeline.build(entities, times, 4)
    lo, mid, hi, valid = _bounds(timeline, queries, WINDOW, HOP)
    order = np.lexsort((hi, np.where(valid, np.array([e for e, _ in queries]), 0)))
    q = np.array([max(e, 0) if 0 <= e < 4 else 0 for e, _ in queries], np.int64).reshape(-1)
    runs = Runs.of(entities)
    sums, deviation = FloatSums.build(values, runs, 4)
    squares = FloatSums.build(deviation * deviation, runs, 4)[0]
    total = sums.sum(lo, hi, q)
    var = pop_var(sums, squares, values, lo, hi, q)
    for i in range(len(queries)):
        window = values[lo[i] : hi[i]]
        with np.errstate(invalid="ignore"):  # inf + -inf
            expected = float(np.sum(window)) if len(window) else 0.0
        if all(math.isfinite(v) for v in window):
            expected = math.fsum(window)
            scale = math.fsum(abs(v) for v in window) + 1.0
            assert abs(total[i] - expected) <= 1e-9 * scale, (total[i], expected)
            if len(window):
                exact = statistics.pvariance(window.tolist())  # exact, in fractions
                assert math.isclose(var[i], exact, rel_tol=1e-9, abs_tol=1e-200), (var[i], exact)
                if len(set(window.tolist())) == 1:
                    assert var[i] == 0.0
            else:
                assert math.isnan(var[i])
        else:
            assert math.isnan(expected) == math.isnan(total[i])
            if not math.isnan(expected):
                assert total[i] == expected
            assert math.isnan(var[i])
    columns: list[Any] = [values, integers]
    for direct in (True, False):
        bounds = (lo[order], mid[order], hi[order])
        for kind in ("min", "max"):
            for column in columns:
                got, has = window_extreme(kind, column, entities, times, HOP, bounds, direct)
                for k, i in enumerate(order):
                    window = column[lo[i] : hi[i]]
                    assert has[k] == (len(window) > 0)
                    if not len(window):
                        continue
                    # max: nan if any is (DuckDB's order); min: nan only if all are.
                    want = np.max(window) if kind == "max" else np.fmin.reduce(window)
                    assert got[k] == want or (math.isnan(got[k]) and math.isnan(want))


def _view(ends: bool) -> FeatureView:
    """Every numpy-path function; ``ends``: with first/last (events then sort by offset too)."""
    ends_only = ("last_coupon_10m", "first_cat_20m")
    aggregations = (
        Aggregation("n_10m", "count", window="10m", hop="1m"),
        Aggregation("big_20m", "count", window="20m", hop="5m", filter="amount > 50"),
        Aggregation("amount_sum_20m", "sum", "amount", window="20m", hop="5m"),
        Aggregation("items_sum_10m", "sum", "items", window="10m", hop="1m"),
        Aggregation("amount_mean_10m", "mean", "amount", window="10m", hop="1m"),
        Aggregation("items_mean_10m", "mean", "items", window="10m", hop="1m"),
        Aggregation("amount_std_20m", "stddev", "amount", window="20m", hop="5m"),
        Aggregation("items_var_20m", "variance", "items", window="20m", hop="5m"),
        Aggregation("amount_max_20m", "max", "amount", window="20m", hop="5m"),
        Aggregation("items_min_10m", "min", "items", window="10m", hop="1m"),
        Aggregation("big_max_20m", "max", "amount", window="20m", hop="5m", filter="items > 2"),
        Aggregation("last_coupon_10m", "last", "coupon", window="10m", hop="1m"),
        Aggregation("first_cat_20m", "first", "category", window="20m", hop="5m"),
    )
    kept = tuple(a for a in aggregations if ends or a.name not in ends_only)
    return FeatureView("user_purchases", USER, purchases(), kept)


MINUTE = 60_000
event_st = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.integers(0, 60),  # minute
    st.sampled_from([0, 0, 1, 30_000]),  # ms within it: ties are common
    st.sampled_from([1.5, 20.0, 50.0, 75.25, 99.0]),
    st.integers(1, 4),
    st.sampled_from([None, "SAVE10", "WELCOME"]),
    st.sampled_from(["books", "games"]),
)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(event_st, max_size=60),
    st.lists(st.tuples(st.sampled_from(["a", "b", "c", "zz"]), st.integers(-5, 90)), max_size=25),
    st.booleans(),
    st.booleans(),
)
def test_retrieval_equals_brute_force(
    rows: list[tuple[Any, ...]], points: list[tuple[str, int]], replay: bool, ends: bool
) -> None:
    view = _view(ends)
    events = [
        Event(
            user,
            T0 + minute * MINUTE + ms,
            {
                "user_id": user,
                "order_id": f"o{offset}",
                "amount": amount,
                "currency": "EUR",
                "category": category,
                "created_at": T0 + minute * MINUTE + ms,
                "coupon": coupon,
                "items": items,
                "payment_method": "card",
            },
            0,
            offset,
        )
        for offset, (user, minute, ms, amount, items, coupon, category) in enumerate(rows)
    ]
    # Offsets grow in arrival order, the times drawn do not: late and out-of-order events.
    queries = [(user, T0 + minute * MINUTE + (7 if minute % 3 else 0)) for user, minute in points]
    if events:  # query exactly at event times too (ties at the timestamp)
        queries += [(str(e.entity_key), e.event_time_ms) for e in events[:5]]
    names = list(view.feature_types())
    with tempfile.TemporaryDirectory() as root:
        sink = OfflineSink(root)
        for start in range(0, len(events), 17):
            sink.write(view.source, events[start : start + 17])
        if replay:  # a restarted worker writes its batches again: they replace their files
            again = OfflineSink(root)
            for start in range(17, len(events), 17):
                again.write(view.source, events[start : start + 17])
        table = pa.table(
            {
                "user_id": [u for u, _ in queries],
                "event_timestamp": pa.array([t for _, t in queries], pa.timestamp("ms", tz="UTC")),
            }
        )
        result = get_historical_features(table, names, [view], root).to_pylist()
    for (user, t), row in zip(queries, result, strict=True):
        expected = brute_force(view, events, user, t)
        for name in names:
            got, want = row[name], expected[name]
            if isinstance(want, float) and got is not None:
                assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), (user, t, name)
            else:
                assert got == want, (user, t, name, got, want)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=30), st.data())
def test_integer_prefix_sums_never_wrap(values: list[int], data: st.DataObject) -> None:
    """Range sums from the prefix are the exact integer sums, even where a running total
    passes int64 (such totals are kept as Python ints rather than wrapped)."""
    sums = prefix(np.array(values, np.int64))
    lo = data.draw(st.integers(0, len(values)))
    hi = data.draw(st.integers(lo, len(values)))
    assert int(sums[hi] - sums[lo]) == sum(values[lo:hi])
