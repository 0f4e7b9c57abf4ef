"""Point-in-time retrieval against a brute-force reading of the window rule, and the
online tile engine against the offline one on the same events."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from streamfs.definitions.compile import compile_view
from streamfs.offline.log import OfflineSink
from streamfs.offline.retrieval import get_historical_features
from streamfs.offline.rolling import RollPolicy
from streamfs.online import UnknownFeatureError
from streamfs.tiles import EntityTiles
from tests.offline.helpers import T0, brute_force, random_events, random_queries, rich_view

# Exact everywhere but float rounding (sums in another order) and the percentile
# sketch, exact online only up to 200 values: these windows hold far fewer.
REL = 1e-9


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=REL, abs_tol=1e-9)
    return bool(a == b)


def entity_table(points: list[tuple[str, int]]) -> pa.Table:
    return pa.table(
        {
            "user_id": [p[0] for p in points],
            "event_timestamp": pa.array([p[1] for p in points], pa.timestamp("ms", tz="UTC")),
            "label": list(range(len(points))),
        }
    )


@pytest.mark.parametrize(("seed", "prefix"), [(1, True), (2, True), (3, False)])
def test_historical_features_equal_a_brute_force_scan(
    tmp_path: Path, seed: int, prefix: bool
) -> None:
    rng = random.Random(seed)
    view = rich_view()
    events = random_events(rng, 400)
    sink = OfflineSink(str(tmp_path))
    for start in range(0, len(events), 97):  # several batches, several files
        sink.write(view.source, events[start : start + 97])
    points = random_queries(rng, events, 150)
    names = list(view.feature_types())
    result = get_historical_features(
        entity_table(points), names, [view], str(tmp_path), prefix=prefix
    )

    assert isinstance(result, pa.Table)
    assert result.num_rows == len(points)
    assert result.column("label").to_pylist() == list(range(len(points)))  # input order
    rows = result.to_pylist()
    for (entity, t_ms), row in zip(points, rows, strict=True):
        expected = brute_force(view, events, entity, t_ms)
        for name in names:
            assert same(row[name], expected[name]), (entity, t_ms, name, row[name], expected[name])


def test_online_tiles_and_offline_retrieval_agree(tmp_path: Path) -> None:
    rng = random.Random(7)
    view = rich_view()
    compiled = compile_view(view)
    events = random_events(rng, 300)
    OfflineSink(str(tmp_path)).write(view.source, events)
    names = list(view.feature_types())
    now = T0 + 250 * 60_000
    users = [*sorted({str(e.entity_key) for e in events}), "nobody"]
    offline = get_historical_features(
        entity_table([(u, now) for u in users]), names, [view], str(tmp_path)
    ).to_pylist()
    for user, row in zip(users, offline, strict=True):
        tiles = EntityTiles(compiled.layout)
        for e in events:  # arrival (offset) order, event times out of order
            if e.entity_key == user:
                tiles.add_event(e.event_time_ms, compiled.inputs(e.record), e.offset)
        online = compiled.finish(tiles.query(now))
        for name in names:
            assert same(row[name], online[name]), (user, name, row[name], online[name])


def test_names_resolve_like_online_reads_and_unknown_ones_are_named(tmp_path: Path) -> None:
    view = rich_view()
    table = entity_table([("u1", T0)])
    out = get_historical_features(table, ["user_purchases:count_1h", "gap"], [view], str(tmp_path))
    assert out.column_names == [
        "user_id",
        "event_timestamp",
        "label",
        "user_purchases:count_1h",
        "gap",
    ]
    assert out.to_pylist()[0]["user_purchases:count_1h"] == 0  # no log at all: empty values
    with pytest.raises(UnknownFeatureError, match="nope"):
        get_historical_features(table, ["nope"], [view], str(tmp_path))


def test_epoch_ms_timestamps_and_replayed_batches(tmp_path: Path) -> None:
    view = rich_view()
    events = random_events(random.Random(3), 50, users=1)
    sink = OfflineSink(str(tmp_path))
    sink.write(view.source, events)
    OfflineSink(str(tmp_path)).write(view.source, events[:20])  # a replay, cut shorter
    OfflineSink(str(tmp_path)).write(view.source, events[20:])
    table = pa.table({"user_id": ["u0"], "event_timestamp": [T0 + 10**9]})
    out = get_historical_features(table, ["count_2h", "amount_sum_2h"], [view], str(tmp_path))
    t = T0 + 10**9
    expected = brute_force(view, events, "u0", t)
    assert out.to_pylist()[0]["count_2h"] == expected["count_2h"]
    files = sorted(p.name for p in tmp_path.rglob("*.parquet"))
    assert all("o000000000000-o000000000049" not in f for f in files), files


def test_compaction_merges_files_without_changing_answers(tmp_path: Path) -> None:
    from streamfs.offline.compact import compact

    view = rich_view()
    events = random_events(random.Random(5), 200)
    sink = OfflineSink(str(tmp_path), policy=RollPolicy(fanout=100))  # 10 files stay apart
    for start in range(0, 200, 20):
        sink.write(view.source, events[start : start + 20])
    names = list(view.feature_types())
    points = random_queries(random.Random(6), events, 40)
    before = get_historical_features(entity_table(points), names, [view], str(tmp_path))
    assert len(list(tmp_path.rglob("*.parquet"))) == 10
    done = compact(str(tmp_path), view.source, "2999-01-01")
    assert (done.merged, done.removed) == (1, 10)
    assert [p.name for p in tmp_path.rglob("*.parquet")] == [
        "p0-o000000000000-o000000000199.parquet"
    ]
    after = get_historical_features(entity_table(points), names, [view], str(tmp_path))
    for old, new in zip(before.to_pylist(), after.to_pylist(), strict=True):
        assert all(same(old[n], new[n]) for n in names), (old, new)  # floats: summing order
