"""The read-side value cache gives exactly what decoding afresh gives, at any read time."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streamfs.online import ValueCache, ViewLayout, decode_values
from streamfs.tiles import EntityTiles
from tests.worker_fixtures import purchase_plan, purchase_source

HOUR_MS = 3_600_000
VIEW: ViewLayout = purchase_plan(purchase_source("t")).view
NAMES = VIEW.feature_names


def _tiles(events: list[tuple[int, float, str]]) -> bytes:
    state = EntityTiles(VIEW.layout)
    for t, amount, category in sorted(events):
        record: dict[str, Any] = {"amount": amount, "category": category}
        state.add_event(t, [1, amount, 1, amount, amount, amount, category, category])
        del record
    return state.encode()


events = st.lists(
    st.tuples(
        st.integers(0, 10 * 24 * HOUR_MS),
        st.floats(0, 500, allow_nan=False),
        st.sampled_from(["a", "b", "c"]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(events=events, reads=st.lists(st.integers(0, 12 * 24 * HOUR_MS), min_size=1, max_size=8))
def test_cached_values_equal_fresh_ones(
    events: list[tuple[int, float, str]], reads: list[int]
) -> None:
    data = _tiles(events)
    cache = ValueCache(max_entries=64)
    for at in reads + reads:  # the second pass reads from the cache
        assert decode_values(VIEW, "u", data, NAMES, at, cache) == decode_values(
            VIEW, "u", data, NAMES, at
        )
    if max(reads) >= max(e[0] for e in events):
        assert cache.hits > 0
