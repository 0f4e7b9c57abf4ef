"""The read-side value cache gives exactly what decoding afresh gives, at any read time:
its validity interval never outlives a window boundary that changes a value, and new
state (new bytes) or a new layout is never answered from old values."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streamfs.online import (
    FOREVER_MS,
    FeatureValues,
    ValueCache,
    ViewLayout,
    decode_values,
    validity,
)
from streamfs.tiles import EntityTiles
from streamfs.windows import as_of_ms
from tests.worker_fixtures import brute_force, purchase_plan, purchase_source

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
VIEW: ViewLayout = purchase_plan(purchase_source("t")).view
NAMES = VIEW.feature_names
Event = tuple[int, float | None, str]


def _state(events: list[Event]) -> EntityTiles:
    state = EntityTiles(VIEW.layout)
    for seq, (t, amount, category) in enumerate(sorted(events, key=lambda e: e[0])):
        # A None amount skips the amount features for that event (a tile may then hold
        # nothing for them): the validity must stay exact, conservative at worst.
        state.add_event(t, [1, amount, 1, amount, amount, amount, category, category], seq)
    return state


def _tiles(events: list[Event]) -> bytes:
    return _state(events).encode()


def _fresh(data: bytes | None, at_ms: int) -> dict[str, Any]:
    return decode_values(VIEW, "u", data, NAMES, at_ms).values


events_st = st.lists(
    st.tuples(
        st.integers(0, 10 * DAY_MS),
        st.one_of(st.none(), st.floats(0, 500, allow_nan=False)),
        st.sampled_from(["a", "b", "c"]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=80, deadline=None)
@given(events=events_st, reads=st.lists(st.integers(0, 20 * DAY_MS), min_size=1, max_size=8))
def test_cached_values_equal_fresh_ones_at_any_read_time(
    events: list[Event], reads: list[int]
) -> None:
    data = _tiles(events)
    cache = ValueCache(max_entries=64)
    for at in reads + sorted(reads) + reads:  # out of order, forward, and again
        assert decode_values(VIEW, "u", data, NAMES, at, cache) == decode_values(
            VIEW, "u", data, NAMES, at
        )


@settings(max_examples=80, deadline=None)
@given(events=events_st, after_ms=st.integers(0, 15 * DAY_MS), picks=st.lists(st.floats(0, 1)))
def test_values_hold_over_the_whole_validity_interval(
    events: list[Event], after_ms: int, picks: list[float]
) -> None:
    state = _state(events)
    assert state.last_event_time_ms is not None
    as_of = state.last_event_time_ms + after_ms
    from_ms, until_ms = validity(state, as_of)
    assert from_ms <= as_of < until_ms
    end = min(until_ms, as_of + 40 * DAY_MS)  # past every window: values are empty for good
    expected = state.query(as_of)
    for s in [from_ms, as_of, end - 1] + [from_ms + int(p * (end - 1 - from_ms)) for p in picks]:
        assert state.query(s) == expected, s
    if until_ms != FOREVER_MS:  # the boundary is a real one for some feature, or earlier
        assert until_ms <= as_of + 7 * DAY_MS + DAY_MS


@settings(max_examples=40, deadline=None)
@given(events=events_st)
def test_a_read_sweeping_forward_matches_a_brute_force_over_the_raw_events(
    events: list[Event],
) -> None:
    data = _tiles(events)
    raw = [
        (t, seq, {"amount": amount or 0.0, "category": category})  # amounts not compared
        for seq, (t, amount, category) in enumerate(sorted(events, key=lambda e: e[0]))
    ]
    last = max(t for t, _a, _c in events)
    cache = ValueCache()
    at = last - HOUR_MS
    while at < last + 9 * DAY_MS:  # every 37 minutes: crosses every kind of boundary
        got = decode_values(VIEW, "u", data, NAMES, at, cache)
        assert got.values == _fresh(data, at)
        expected = brute_force(raw, as_of_ms(at, last))
        for name in ("purchases_1h", "purchases_24h", "categories_7d", "last_category_7d"):
            assert got.values[name] == expected[name], (name, at)
        at += 37 * 60_000
    assert cache.hits > cache.misses  # most reads are lookups


def test_a_1h_count_falls_to_zero_an_hour_after_the_last_event_from_the_cache() -> None:
    t0 = 100 * DAY_MS + 7 * 60_000  # 7 minutes into a 5-minute hop's tile 1
    data = _tiles([(t0, 10.0, "a"), (t0 + 1_000, 20.0, "b")])
    cache = ValueCache()

    def read(at: int) -> dict[str, Any]:
        return decode_values(VIEW, "u", data, NAMES, at, cache).values

    assert read(t0 + 2_000)["purchases_1h"] == 2
    assert read(t0 + 30 * 60_000)["purchases_1h"] == 2
    hits = cache.hits
    assert read(t0 + 31 * 60_000)["purchases_1h"] == 2
    assert cache.hits == hits + 1  # nothing changed in between: a lookup
    # The events' tile [t0 - 2 min, t0 + 3 min) leaves the 1 h window (5-minute hops) when
    # (t - 1 h) // 5 min passes it: at tile end + 1 h, not a millisecond later.
    tile_end = (t0 // 300_000 + 1) * 300_000
    assert read(tile_end + HOUR_MS - 1)["purchases_1h"] == 2
    assert read(tile_end + HOUR_MS)["purchases_1h"] == 0
    assert read(tile_end + HOUR_MS)["purchases_24h"] == 2
    assert read(tile_end + HOUR_MS)["amount_sum_1h"] == 0
    assert read(tile_end + HOUR_MS - 1)["purchases_1h"] == 2  # a read back in time, too
    for at in (t0 + 2_000, tile_end + HOUR_MS - 1, tile_end + HOUR_MS, t0 + 2 * DAY_MS):
        assert read(at) == _fresh(data, at)


def test_new_state_is_never_answered_from_old_values() -> None:
    t0 = 100 * DAY_MS
    cache = ValueCache()
    before = _tiles([(t0, 10.0, "a")])
    after = _tiles([(t0, 10.0, "a"), (t0 + 60_000, 5.0, "b")])

    def read(data: bytes | None, at: int) -> FeatureValues:
        return decode_values(VIEW, "u", data, NAMES, at, cache)

    assert read(before, t0 + 120_000).values["purchases_1h"] == 1
    assert read(before, t0 + 121_000).values["purchases_1h"] == 1
    assert cache.hits == 1
    got = read(after, t0 + 122_000)  # the worker wrote a new state: new bytes
    assert got.values["purchases_1h"] == 2
    assert got.values["categories_7d"] == 2
    assert got.last_event_time_ms == t0 + 60_000
    assert cache.misses == 2
    # The key expired or was deleted: no state, empty values, whatever was cached.
    assert read(None, t0 + 123_000).values["purchases_1h"] == 0
    assert read(None, t0 + 123_000).last_event_time_ms is None


def test_a_state_with_an_event_after_the_read_time_answers_as_of_that_event() -> None:
    t0 = 100 * DAY_MS
    data = _tiles([(t0, 10.0, "a"), (t0 + 30_000, 1.0, "a")])
    cache = ValueCache()
    for at in (t0 + 10_000, t0 + 20_000, t0 + 30_000, t0 + 40_000, t0 + 10_000):
        got = decode_values(VIEW, "u", data, NAMES, at, cache)
        assert got == decode_values(VIEW, "u", data, NAMES, at)
        assert got.as_of_ms == max(at, t0 + 30_000)
        assert got.values["purchases_1h"] == 2


def test_a_new_layout_object_is_computed_afresh_and_entries_are_bounded() -> None:
    t0 = 100 * DAY_MS
    cache = ValueCache(max_entries=3)
    data = _tiles([(t0, 10.0, "a")])
    decode_values(VIEW, "u", data, NAMES, t0, cache)
    renamed = dataclasses.replace(VIEW)  # same definition, another object (a registry reload)
    decode_values(renamed, "u", data, NAMES, t0, cache)
    assert (cache.hits, cache.misses) == (0, 2)
    for entity in ("v", "w", "x", "y"):
        decode_values(VIEW, entity, data, NAMES, t0, cache)
    assert len(cache) == 3
    decode_values(VIEW, "y", data, NAMES, t0 + 1, cache)
    assert cache.hits == 1


def test_a_cache_of_no_entries_decodes_every_read() -> None:
    t0 = 100 * DAY_MS
    cache = ValueCache(max_entries=0)
    data = _tiles([(t0, 10.0, "a")])
    for _ in range(2):
        assert decode_values(VIEW, "u", data, NAMES, t0, cache) == decode_values(
            VIEW, "u", data, NAMES, t0
        )
    assert (cache.hits, cache.misses, len(cache)) == (0, 2, 0)
