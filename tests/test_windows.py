"""Sawtooth window math against its definition: floor((t - W) / h) * h <= e <= t."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamfs.windows import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    WindowSpec,
    as_of_ms,
    default_hop_ms,
    in_window,
    is_future,
    is_late,
    oldest_needed_tile,
    tile_of,
    useful_lateness_ms,
    window_start_ms,
    window_tiles,
)

times = st.integers(min_value=-(10**13), max_value=10**13)  # negative: before 1970 works too


@st.composite
def windows(draw: st.DrawFn) -> WindowSpec:
    hop_ms = draw(st.integers(min_value=1, max_value=10_000))
    return WindowSpec(hop_ms * draw(st.integers(min_value=1, max_value=30)), hop_ms)


@given(windows(), times)
def test_window_spans_between_w_and_w_plus_h(spec: WindowSpec, t: int) -> None:
    start = window_start_ms(t, spec.window_ms, spec.hop_ms)
    assert start % spec.hop_ms == 0
    assert spec.window_ms <= t - start < spec.window_ms + spec.hop_ms


@given(windows(), times, st.integers(min_value=-(10**5), max_value=10**5))
def test_window_tiles_hold_exactly_the_window(spec: WindowSpec, t: int, delta: int) -> None:
    w, h = spec.window_ms, spec.hop_ms
    tiles = window_tiles(t, w, h)
    assert len(tiles) == spec.tile_count
    assert tiles[-1] == tile_of(t, h)
    e = t - delta
    if in_window(e, t, w, h):
        assert tile_of(e, h) in tiles
    elif e < t:  # before the window: its tile is older than the window's tiles
        assert tile_of(e, h) < tiles[0]
    # Every tile but the head lies wholly in the window; the head from its start to t.
    for k in tiles[:-1]:
        assert in_window(k * h, t, w, h)
        assert in_window((k + 1) * h - 1, t, w, h)
    assert in_window(tiles[-1] * h, t, w, h)


@given(windows(), times)
def test_boundaries_are_inclusive(spec: WindowSpec, t: int) -> None:
    w, h = spec.window_ms, spec.hop_ms
    start = window_start_ms(t, w, h)
    assert in_window(t, t, w, h)
    assert in_window(start, t, w, h)
    assert not in_window(start - 1, t, w, h)
    assert not in_window(t + 1, t, w, h)


@given(windows(), times, st.integers(min_value=0, max_value=10**7))
def test_eviction_keeps_every_tile_a_later_query_reads(
    spec: WindowSpec, now: int, ahead: int
) -> None:
    w, h = spec.window_ms, spec.hop_ms
    oldest = oldest_needed_tile(now, w, h)
    assert window_tiles(now, w, h)[0] == oldest
    assert window_tiles(now + ahead, w, h)[0] >= oldest


@given(windows(), times, st.integers(min_value=0, max_value=10**7))
def test_events_later_than_useful_lateness_are_in_evicted_tiles(
    spec: WindowSpec, now: int, extra: int
) -> None:
    w, h = spec.window_ms, spec.hop_ms
    event = now - useful_lateness_ms(w, h) - extra
    assert tile_of(event, h) < oldest_needed_tile(now, w, h)
    # ... and one just inside is still read by the query at now.
    assert tile_of(event + extra + h, h) >= oldest_needed_tile(now, w, h)


def test_as_of_never_before_the_last_event() -> None:
    assert as_of_ms(100, None) == 100
    assert as_of_ms(100, 90) == 100
    assert as_of_ms(100, 100) == 100
    assert as_of_ms(100, 105) == 105


def test_late_and_future_bounds() -> None:
    assert not is_late(1_000, now_ms=2_000, allowed_lateness_ms=1_000)
    assert is_late(999, now_ms=2_000, allowed_lateness_ms=1_000)
    assert not is_future(2_500, now_ms=2_000, max_skew_ms=500)
    assert is_future(2_501, now_ms=2_000, max_skew_ms=500)


def test_window_spec_validates() -> None:
    with pytest.raises(ValueError, match="whole multiple"):
        WindowSpec(HOUR_MS, 7 * MINUTE_MS)
    with pytest.raises(ValueError, match="positive"):
        WindowSpec(0, 1)
    assert WindowSpec.of(HOUR_MS) == WindowSpec(HOUR_MS, 5 * MINUTE_MS)


@pytest.mark.parametrize(
    ("window_ms", "hop_ms"),
    [
        (HOUR_MS, 5 * MINUTE_MS),
        (DAY_MS, HOUR_MS),
        (7 * DAY_MS, DAY_MS),
        (30 * DAY_MS, DAY_MS),
        (10 * MINUTE_MS, MINUTE_MS),
        (MINUTE_MS, 5_000),
        (12_000, 1_000),
        (13, 1),
    ],
)
def test_default_hops(window_ms: int, hop_ms: int) -> None:
    assert default_hop_ms(window_ms) == hop_ms
    assert window_ms % hop_ms == 0
