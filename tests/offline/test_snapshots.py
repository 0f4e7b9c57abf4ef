"""Feature snapshots: what the online store was given, per batch, in Parquet, replay-safe."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

from streamfs.definitions import FeatureView
from streamfs.definitions.compile import compile_view
from streamfs.ingest import Event
from streamfs.offline.layout import date_of
from streamfs.offline.location import Location
from streamfs.offline.log import OfflineSink
from streamfs.offline.rolling import RollPolicy
from streamfs.offline.snapshots import SnapshotView, snapshot_table, view_dir
from streamfs.online import OnlineWrite, decode_values, online_key
from streamfs.tiles import EntityTiles
from tests.offline.helpers import T0, brute_force, random_events, rich_view

NS = "snap"
HOUR = 3_600_000


def engine_writes(
    view: FeatureView, version: int, events: Sequence[Event], prior: Sequence[Event] = ()
) -> list[OnlineWrite]:
    """What the engine writes for a batch: each touched entity's tiles over all its events,
    at the offset of its newest event in the batch (streamfs.engine.PartitionEngine)."""
    compiled = compile_view(view)
    touched: dict[str | int, int] = {}
    for e in events:
        touched[e.entity_key] = e.offset
    out = []
    for entity, offset in touched.items():
        tiles = EntityTiles(compiled.layout)
        for e in [*prior, *events]:
            if e.entity_key == entity:
                tiles.add_event(e.event_time_ms, compiled.inputs(e.record), e.offset)
        assert tiles.last_event_time_ms is not None
        key = online_key(view.name, version, entity, NS)
        out.append(OnlineWrite(key, offset, tiles.encode(), tiles.last_event_time_ms, view.ttl_ms))
    return out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def test_snapshot_rows_hold_what_an_online_read_returns_at_write_time() -> None:
    view = rich_view()
    spec = SnapshotView.of(view, 3)
    events = random_events(random.Random(11), 120)
    writes = engine_writes(view, 3, events)
    write_time = T0 + 5 * HOUR
    table = snapshot_table(spec, events, writes, write_time, NS)

    assert table.schema == spec.schema
    types = dict(zip(table.schema.names, table.schema.types, strict=True))
    assert types["count_1h"] == pa.int64()
    assert types["amount_mean_1h"] == pa.float64()
    assert types["last_cat_1h"] == pa.string()
    assert types["share_1h"] == pa.float64()  # derived features too
    rows = table.to_pylist()
    assert sorted(r["_entity_key"] for r in rows) == sorted({e.entity_key for e in events})
    assert [r["_offset"] for r in rows] == sorted(r["_offset"] for r in rows)
    reader = spec.layout
    names = list(view.feature_types())
    by_key = {w.key: w for w in writes}
    for row in rows:
        entity = row["_entity_key"]
        write = by_key[online_key(view.name, 3, entity, NS)]
        online = decode_values(reader, entity, write.tiles, names, write_time)
        brute = brute_force(view, events, entity, write_time)
        assert (row["_view"], row["_view_version"], row["_write_time_ms"]) == (
            "user_purchases",
            3,
            write_time,
        )
        assert row["_event_time_ms"] == max(
            e.event_time_ms for e in events if e.entity_key == entity
        )
        assert row["_offset"] == max(e.offset for e in events if e.entity_key == entity)
        for name in names:
            assert same(row[name], online.values[name]), (entity, name)
            if name not in {"p50_amount_1h", "cats_2h"}:  # exact below sketch sizes anyway
                assert same(row[name], brute[name]), (entity, name, row[name], brute[name])


def snapshot_offsets(root: Path) -> tuple[Counter[int], list[Path]]:
    files = sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))
    offsets: Counter[int] = Counter()
    for path in files:
        offsets.update(pq.read_table(path).column("_offset").to_pylist())
    return offsets, files


def test_snapshots_are_partitioned_by_view_version_and_date_and_replays_replace(
    tmp_path: Path,
) -> None:
    view = rich_view()
    spec = SnapshotView.of(view, 1)
    events = random_events(random.Random(12), 90)
    now = T0 + 5 * HOUR
    sink = OfflineSink(str(tmp_path), policy=RollPolicy(fanout=100), clock=lambda: now)
    for start in range(0, 90, 30):
        batch = events[start : start + 30]
        writes = engine_writes(view, 1, batch, events[:start])
        sink.write_batch(view.source, batch, writes, [spec], namespace=NS)
    directory = Path(view_dir(str(tmp_path), view.name, 1)) / f"date={date_of(now)}"
    offsets, files = snapshot_offsets(directory)
    assert len(files) == 3
    per_batch = [len({e.entity_key for e in events[s : s + 30]}) for s in range(0, 90, 30)]
    assert sum(offsets.values()) == sum(per_batch)
    assert max(offsets.values()) == 1

    # A crash: the worker replays from offset 30, cut in other batches.
    again = OfflineSink(str(tmp_path), clock=lambda: now + 1)
    for start, stop in ((30, 50), (50, 90)):
        batch = events[start:stop]
        again.write_batch(
            view.source, batch, engine_writes(view, 1, batch, events[:start]), [spec], namespace=NS
        )
    offsets, files = snapshot_offsets(directory)
    expected: list[int] = []
    for start, stop in ((0, 30), (30, 50), (50, 90)):
        last: dict[str | int, int] = {}
        for e in events[start:stop]:
            last[e.entity_key] = e.offset
        expected += last.values()
    assert offsets == Counter(expected)
    # The events log beside them is intact too.
    log_offsets, _ = snapshot_offsets(tmp_path / "v1" / "source=purchases")
    assert log_offsets == Counter(range(90))


def test_snapshots_through_a_pyarrow_filesystem_object() -> None:
    view = rich_view()
    spec = SnapshotView.of(view, 2)
    events = random_events(random.Random(13), 40)
    mock = fs._MockFileSystem()
    sink = OfflineSink(Location(mock, "bucket/features"), clock=lambda: T0 + HOUR)
    written = sink.write_batch(
        view.source, events, engine_writes(view, 2, events), [spec], namespace=NS
    )
    snap = [p for p in written if "/view=" in p]
    assert snap == [
        "bucket/features/v1/view=user_purchases/version=2/date=2025-11-24/"
        "p0-o000000000000-o000000000039.parquet"
    ]
    table = pq.read_table(snap[0], filesystem=mock)
    assert table.schema == spec.schema
    assert table.num_rows == len({e.entity_key for e in events})


def test_decoded_tiles_passed_in_give_the_same_rows() -> None:
    view = rich_view()
    spec = SnapshotView.of(view, 1)
    events = random_events(random.Random(14), 60)
    writes = engine_writes(view, 1, events)
    decoded = {w.key: EntityTiles.decode(spec.layout.layout, w.tiles) for w in writes}
    slow = snapshot_table(spec, events, writes, T0 + HOUR, NS)
    fast = snapshot_table(spec, events, writes, T0 + HOUR, NS, decoded)
    assert fast.equals(slow)
