"""Tile stores against a brute-force scan of the raw events, for random streams and windows."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfs import statecodec
from streamfs.aggregators import make
from streamfs.statecodec import StateDecodeError
from streamfs.tiles import EntityTiles, Feature, Layout, Tiles
from streamfs.windows import WindowSpec, as_of_ms, in_window

Event = tuple[int, int]  # (event_time_ms, value); the seq is the arrival position


def quantile(values: Sequence[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))])


def pvariance(values: Sequence[int]) -> float | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


# function -> brute force over the window's (time, seq, value) events, in arrival order
BRUTE: dict[str, Callable[[list[tuple[int, int, int]]], Any]] = {
    "count": len,
    "sum": lambda es: sum(v for _, _, v in es),
    "mean": lambda es: sum(v for _, _, v in es) / len(es) if es else None,
    "min": lambda es: min((v for _, _, v in es), default=None),
    "max": lambda es: max((v for _, _, v in es), default=None),
    "first": lambda es: min(es)[2] if es else None,
    "last": lambda es: max(es)[2] if es else None,
    "count_distinct": lambda es: len({v for _, _, v in es}),
    "p50": lambda es: quantile([v for _, _, v in es], 0.5) if es else None,
    "variance": lambda es: pvariance([v for _, _, v in es]),
}


def brute(function: str, events: Sequence[Event], spec: WindowSpec, t_ms: int) -> Any:
    last = max((time for time, _ in events), default=None)
    t_ms = as_of_ms(t_ms, last)
    chosen = [
        (time, seq, value)
        for seq, (time, value) in enumerate(events)
        if in_window(time, t_ms, spec.window_ms, spec.hop_ms)
    ]
    return BRUTE[function](chosen)


def same(function: str, got: Any, expected: Any) -> bool:
    if function == "variance" and got is not None and expected is not None:
        return bool(got == pytest.approx(expected, rel=1e-9, abs=1e-9))
    return bool(got == expected)


@st.composite
def specs(draw: st.DrawFn) -> WindowSpec:
    hop_ms = draw(st.integers(min_value=1, max_value=60))
    return WindowSpec(hop_ms * draw(st.integers(min_value=1, max_value=8)), hop_ms)


event_lists = st.lists(
    st.tuples(st.integers(min_value=0, max_value=1_000), st.integers(min_value=-20, max_value=20)),
    max_size=60,
)
query_times = st.lists(st.integers(min_value=-100, max_value=2_500), min_size=1, max_size=6)


def tiles_for(function: str, spec: WindowSpec, events: Sequence[Event]) -> Tiles:
    tiles = Tiles(make(function), spec)
    for seq, (time, value) in enumerate(events):
        tiles.add_event(time, value, seq)
    return tiles


@pytest.mark.parametrize("function", sorted(BRUTE))
@settings(max_examples=80)
@given(events=event_lists, spec=specs(), queries=query_times)
def test_tiles_equal_brute_force(
    function: str, events: list[Event], spec: WindowSpec, queries: list[int]
) -> None:
    # Events arrive in the drawn order: out of order, with ties on times.
    tiles = tiles_for(function, spec, events)
    for t in queries:
        assert same(function, tiles.query(t), brute(function, events, spec, t))


@pytest.mark.parametrize("function", ["count", "sum", "last", "count_distinct", "variance"])
@settings(max_examples=50)
@given(
    events=event_lists,
    spec=specs(),
    lags=st.lists(st.integers(min_value=0, max_value=200), min_size=60, max_size=60),
    data=st.data(),
)
def test_online_pattern_query_after_each_event(
    function: str, events: list[Event], spec: WindowSpec, lags: list[int], data: st.DataObject
) -> None:
    """The worker's life: events arrive (some late), reads come at ``now >= the events``."""
    tiles = Tiles(make(function), spec)
    now = -(10**9)
    for seq, (time, value) in enumerate(events):
        tiles.add_event(time, value, seq)
        now = max(now, time + lags[seq])  # the worker's clock never goes back
        assert same(function, tiles.query(now), brute(function, events[: seq + 1], spec, now))
        if data.draw(st.booleans()):
            tiles.evict(now)  # eviction at now never changes an answer at now or later
            assert same(function, tiles.query(now), brute(function, events[: seq + 1], spec, now))


@given(events=event_lists, spec=specs(), now=st.integers(min_value=0, max_value=2_000))
def test_evict_drops_only_unread_tiles(events: list[Event], spec: WindowSpec, now: int) -> None:
    tiles = tiles_for("sum", spec, events)
    before = dict(tiles.states)
    tiles.evict(now)
    assert all(index >= (now - spec.window_ms) // spec.hop_ms for index in tiles.states)
    for later in (now, now + spec.hop_ms, now + spec.window_ms, now + 10 * spec.window_ms):
        assert tiles.query(later) == brute("sum", events, spec, later)
    assert set(before) - set(tiles.states) == {
        i for i in before if i < (now - spec.window_ms) // spec.hop_ms
    }


def test_boundaries_and_falling_to_empty() -> None:
    spec = WindowSpec(window_ms=100, hop_ms=10)
    tiles = Tiles(make("count"), spec)
    # Window at t=255 starts at floor(155 / 10) * 10 = 150.
    for time in (149, 150, 200, 255):
        tiles.add_event(time, 1)
    assert tiles.query(255) == 3  # 150 (start, inclusive) .. 255 (t, inclusive)
    assert tiles.query(259) == 3
    assert tiles.query(260) == 2  # the tail hopped past 150's tile
    assert tiles.query(355) == 1
    assert tiles.query(365) == 0  # long after the last event: the empty value
    assert tiles.query(10**9) == 0
    assert Tiles(make("max"), spec).query(0) is None


def test_query_before_the_last_event_answers_as_of_it() -> None:
    tiles = Tiles(make("count"), WindowSpec(window_ms=100, hop_ms=10))
    tiles.add_event(50, 1)
    tiles.add_event(58, 1)  # e.g. accepted within the future skew
    assert tiles.query(55) == 2  # answered as of 58, the store's as_of
    assert tiles.query(58) == 2


FEATURES = [
    ("count", 1),
    ("sum", 1),
    ("mean", 3),
    ("min", 3),
    ("max", 2),
    ("first", 1),
    ("last", 4),
    ("count_distinct", 2),
    ("p50", 1),
    ("variance", 4),
]


@settings(max_examples=150)
@given(events=event_lists, hop_ms=st.integers(1, 40), queries=query_times, data=st.data())
def test_entity_tiles_equal_brute_force_and_survive_encoding(
    events: list[Event], hop_ms: int, queries: list[int], data: st.DataObject
) -> None:
    # Features over a few hops; some share a hop (one row), some have their own.
    features = []
    for function, multiple in FEATURES:
        hop = hop_ms * data.draw(st.sampled_from([1, 2]))
        features.append(Feature(function, make(function), WindowSpec(hop * 3 * multiple, hop)))
    layout = Layout.of(features)
    store = EntityTiles(layout)
    skip = data.draw(st.sets(st.integers(0, len(events))))  # null inputs for max
    for seq, (time, value) in enumerate(events):
        values: list[Any] = [value] * len(features)
        if seq in skip:
            values[4] = None
        store.add_event(time, values, seq)
    decoded = EntityTiles.decode(layout, store.encode())
    for t in queries:
        got, again = store.query(t), decoded.query(t)
        for feature in features:
            kept = events
            if feature.name == "max":
                kept = [
                    (time, value) for seq, (time, value) in enumerate(events) if seq not in skip
                ]
                # the store's as_of follows every event, null or not
                last = max((time for time, _ in events), default=None)
                t_eff = as_of_ms(t, last)
            else:
                t_eff = t
            expected = brute(feature.name, kept, feature.window, t_eff)
            assert same(feature.name, got[feature.name], expected), feature.name
            assert same(feature.name, again[feature.name], expected), feature.name


# Numbers of every shape the inline paths branch on: small and huge ints (past int64 a
# state is encoded piece by piece), floats, and None (the event does not count).
inline_values = st.none() | st.integers(-(2**70), 2**70) | st.floats(-1e9, 1e9)


@pytest.mark.parametrize(
    "functions",
    [
        ("count", "sum", "mean", "variance", "stddev", "max"),  # inline ones first, then a call
        ("stddev", "mean", "count", "sum"),  # inline only: the whole row in one pack
        ("max", "sum", "count", "mean"),  # a call first: every state on its own
    ],
)
@settings(max_examples=100)
@given(
    events=st.lists(st.tuples(st.integers(0, 300), inline_values), max_size=40),
    hop_ms=st.integers(1, 50),
)
def test_inline_folds_and_encodings_equal_the_aggregators_own(
    functions: tuple[str, ...], events: list[tuple[int, int | float | None]], hop_ms: int
) -> None:
    # EntityTiles folds and encodes count, sum, mean, variance and stddev inline, not
    # through the aggregators' methods: each state and each byte must be the same as
    # theirs (max stands for every aggregator that is still called).
    features = [Feature(f, make(f), WindowSpec(hop_ms * 4, hop_ms)) for f in functions]
    store = EntityTiles(Layout.of(features))
    expected: dict[int, list[Any]] = {}
    for seq, (time, value) in enumerate(events):
        store.add_event(time, [value] * len(features), seq)
        row = expected.setdefault(time // hop_ms, [f.aggregator.initial() for f in features])
        if value is not None:
            for slot, feature in enumerate(features):
                row[slot] = feature.aggregator.add(row[slot], value)
    assert store.groups[0] == expected
    parts = [statecodec.VERSION_BYTE, statecodec.encode_scalar(store.last_event_time_ms)]
    parts.append(struct.pack("<Q", len(expected)))
    for index, row in expected.items():
        parts.append(struct.pack("<q", index))
        for feature, state in zip(features, row, strict=True):
            body = feature.aggregator.encode(state)
            parts += [struct.pack("<I", len(body)), body]
    assert store.encode() == b"".join(parts)
    # And read back inline (a row's leading states in one unpack) as the aggregators would.
    layout = store.layout
    assert EntityTiles.decode(layout, store.encode()).groups[0] == expected
    lazy = EntityTiles.decode(layout, store.encode(), lazy=True)
    rows = {index: layout.groups[0].decode_row(chunk) for index, chunk in lazy.encoded[0].items()}
    assert rows == expected


def multi_hop_layout(hop_ms: int) -> Layout:
    return Layout.of(
        [
            Feature(function, make(function), WindowSpec(hop * 3 * multiple, hop))
            for (function, multiple), hop in zip(
                FEATURES, [hop_ms, 2 * hop_ms] * len(FEATURES), strict=False
            )
        ]
    )


@settings(max_examples=150)
@given(
    events=event_lists,
    hop_ms=st.integers(1, 40),
    split=st.integers(0, 60),
    evict_at=st.none() | st.integers(0, 1_200),
    queries=query_times,
)
def test_a_lazily_decoded_store_folds_evicts_and_encodes_as_the_original(
    events: list[Event], hop_ms: int, split: int, evict_at: int | None, queries: list[int]
) -> None:
    # The worker decodes stored tiles lazily (a row's states when an event falls into
    # it) and re-encodes only the rows it touched: the bytes and values must be those
    # of a store that never left memory.
    layout = multi_hop_layout(hop_ms)
    width = len(layout.features)
    whole = EntityTiles(layout)
    first = EntityTiles(layout)
    for seq, (time, value) in enumerate(events):
        whole.add_event(time, [value] * width, seq)
        if seq < split:
            first.add_event(time, [value] * width, seq)
    resumed = EntityTiles.decode(layout, first.encode(), lazy=True)
    for seq, (time, value) in enumerate(events[split:], split):
        resumed.add_event(time, [value] * width, seq)
    if evict_at is not None:
        whole.evict(evict_at)
        resumed.evict(evict_at)
    assert resumed.encode() == whole.encode()
    assert resumed.is_empty() == whole.is_empty()
    for t in queries:
        assert resumed.query(t) == whole.query(t)
    assert resumed.encode() == whole.encode()  # a query decodes rows, changes no bytes


def test_a_malformed_state_raises_where_its_row_is_read() -> None:
    layout = Layout.of([Feature("n", make("count"), WindowSpec(100, 10))])
    store = EntityTiles(layout)
    store.add_events([(5, [1]), (25, [1])])
    data = bytearray(store.encode())
    data[-9] = 99  # the version byte of the last row's count state
    with pytest.raises(StateDecodeError, match="version 99"):
        EntityTiles.decode(layout, bytes(data))
    lazy = EntityTiles.decode(layout, bytes(data), lazy=True)
    lazy.add_event(7, [1], 2)  # row 0 is sound
    with pytest.raises(StateDecodeError, match="version 99"):
        lazy.add_event(26, [1], 3)
    with pytest.raises(StateDecodeError, match="truncated"):
        EntityTiles.decode(layout, bytes(data[:-1]), lazy=True)


@pytest.mark.parametrize("lazy", [False, True])
def test_every_cut_of_a_store_raises_a_decode_error(lazy: bool) -> None:
    features = [
        Feature("n", make("count"), WindowSpec(100, 10)),
        Feature("s", make("sum"), WindowSpec(100, 10)),
        Feature("d", make("count_distinct"), WindowSpec(500, 50)),
        Feature("l", make("last"), WindowSpec(500, 50)),
    ]
    layout = Layout.of(features)
    store = EntityTiles(layout)
    store.add_events([(5, [1, 2.5, "a", "x"]), (25, [1, -3, "b", "y"]), (70, [1, 1, "a", "z"])])
    data = store.encode()
    assert EntityTiles.decode(layout, data, lazy=lazy).query(70) == store.query(70)
    for cut in range(len(data)):  # a cut store never decodes, nor raises anything else
        with pytest.raises(StateDecodeError):
            EntityTiles.decode(layout, data[:cut], lazy=lazy).query(70)
    with pytest.raises(StateDecodeError, match="trailing"):
        EntityTiles.decode(layout, data + b"\x00", lazy=lazy)


def test_entity_tiles_evict_and_empty() -> None:
    features = [
        Feature("c10", make("count"), WindowSpec(100, 10)),
        Feature("c50", make("count"), WindowSpec(500, 10)),
        Feature("s20", make("sum"), WindowSpec(100, 20)),
    ]
    store = EntityTiles(Layout.of(features))
    store.add_events([(5, [1, 1, 3]), (120, [1, 1, 4])])
    assert store.query(120) == {"c10": 1, "c50": 2, "s20": 4}
    store.evict(130)  # c50 still needs tile 0 of the shared hop-10 rows
    assert store.query(130) == {"c10": 1, "c50": 2, "s20": 4}
    store.evict(10_000)
    assert store.is_empty()
    assert store.query(10_000) == {"c10": 0, "c50": 0, "s20": 0}


def test_layout_refuses_repeated_names() -> None:
    feature = Feature("n", make("count"), WindowSpec(10, 1))
    with pytest.raises(ValueError, match="repeat"):
        Layout.of([feature, feature])
