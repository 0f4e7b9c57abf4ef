"""The offline store on roots that are not local paths: URIs and pyarrow filesystem objects.

There is no object store here, so the roots are ``file://`` URIs (resolved by
``pyarrow.fs.FileSystem.from_uri``) and an in-memory pyarrow filesystem: the
writer, compaction, backfill and retrieval only ever touch files through the
filesystem object, exactly as they would S3's.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs

from streamfs.offline import retrieval
from streamfs.offline.backfill import backfill
from streamfs.offline.compact import compact, compact_snapshots
from streamfs.offline.location import Location
from streamfs.offline.log import OfflineSink
from streamfs.offline.retrieval import get_historical_features
from streamfs.offline.rolling import RollPolicy
from streamfs.offline.snapshots import SnapshotView
from tests.offline.helpers import T0, brute_force, random_events, random_queries, rich_view
from tests.offline.test_snapshots import NS, engine_writes, same


def files_under(location: Location) -> list[str]:
    selector = fs.FileSelector(location.path, recursive=True, allow_not_found=True)
    return sorted(
        i.path
        for i in location.filesystem.get_file_info(selector)
        if i.type == fs.FileType.File and i.path.endswith(".parquet")
    )


def entity_table(points: list[tuple[str, int]]) -> pa.Table:
    return pa.table(
        {
            "user_id": [p[0] for p in points],
            "event_timestamp": pa.array([p[1] for p in points], pa.int64()),
        }
    )


def test_file_uri_root_end_to_end(tmp_path: Path) -> None:
    """Write, compact and read back through ``file://``: the answers stay brute-force exact."""
    view = rich_view()
    root = f"file://{tmp_path}/log"
    events = random_events(random.Random(21), 150)
    sink = OfflineSink(root, policy=RollPolicy(fanout=100))
    for start in range(0, 150, 10):
        sink.write(view.source, events[start : start + 10])
    assert len(list((tmp_path / "log").rglob("*.parquet"))) == 15
    names = list(view.feature_types())
    points = random_queries(random.Random(22), events, 30)
    before = get_historical_features(entity_table(points), names, [view], root).to_pylist()

    done = compact(root, view.source, "2999-01-01", target_bytes=1 << 30)
    assert (done.merged, done.removed) == (1, 15)
    after = get_historical_features(entity_table(points), names, [view], root).to_pylist()
    for (entity, t), old, new in zip(points, before, after, strict=True):
        expected = brute_force(view, events, entity, t)
        for name in ("count_1h", "amount_sum_2h", "last_cat_1h", "gap"):
            assert same(old[name], new[name])
            assert same(new[name], expected[name]), (entity, t, name)


def test_retrieval_reads_through_a_pyarrow_filesystem(monkeypatch: pytest.MonkeyPatch) -> None:
    """A root that is not local is read by pyarrow's dataset over the filesystem."""
    view = rich_view()
    memory = fs.SubTreeFileSystem("/", fs._MockFileSystem())
    location = Location(memory, "bucket/features")
    events = random_events(random.Random(23), 120)
    sink = OfflineSink(location, policy=RollPolicy(fanout=3))  # merges happen on the way
    for start in range(0, 120, 7):
        sink.write(view.source, events[start : start + 7])
    monkeypatch.setattr(retrieval, "resolve_root", lambda root: (memory, "bucket/features"))
    points = random_queries(random.Random(24), events, 30)
    names = ["count_1h", "amount_max_2h", "first_cat_2h", "share_1h"]
    got = get_historical_features(entity_table(points), names, [view], "mem://").to_pylist()
    for (entity, t), row in zip(points, got, strict=True):
        expected = brute_force(view, events, entity, t)
        for name in names:
            assert same(row[name], expected[name]), (entity, t, name)


def test_compact_on_a_filesystem_object_bounds_files_and_merges_snapshots() -> None:
    view = rich_view()
    memory = fs._MockFileSystem()
    location = Location(memory, "lake")
    events = random_events(random.Random(25), 200)
    spec = SnapshotView.of(view, 1)
    sink = OfflineSink(location, policy=RollPolicy(fanout=100), clock=lambda: T0)
    for start in range(0, 200, 10):
        batch = events[start : start + 10]
        writes = engine_writes(view, 1, batch, events[:start])
        sink.write_batch(view.source, batch, writes, [spec], namespace=NS)
    event_files = [p for p in files_under(location) if "/source=" in p]
    sizes = [memory.get_file_info(p).size for p in event_files]
    target = 3 * max(sizes)
    rows_before = pq.ParquetDataset(event_files, filesystem=memory).read().num_rows

    done = compact(location, view.source, "2999-01-01", target_bytes=target)
    event_files = [p for p in files_under(location) if "/source=" in p]
    assert 20 // 3 <= len(event_files) < 20  # merged, but none past the target
    assert done.merged > 0
    assert all(memory.get_file_info(p).size <= target for p in event_files)
    table = pq.ParquetDataset(event_files, filesystem=memory).read()
    assert table.num_rows == rows_before
    assert sorted(table.column("_offset").to_pylist()) == list(range(200))

    snapshot_files = [p for p in files_under(location) if "/view=" in p]
    assert len(snapshot_files) == 20
    snapshot_rows = pq.ParquetDataset(snapshot_files, filesystem=memory).read().num_rows
    merged = compact_snapshots(location, "2999-01-01")
    assert merged.merged == 1
    snapshot_files = [p for p in files_under(location) if "/view=" in p]
    assert len(snapshot_files) == 1
    merged_table = pq.read_table(snapshot_files[0], filesystem=memory)
    assert merged_table.num_rows == snapshot_rows
    assert merged_table.schema == spec.schema


def test_backfill_reads_directories_and_filesystem_objects(tmp_path: Path) -> None:
    view = rich_view()
    memory = fs._MockFileSystem()
    memory.create_dir("exports/2025/11")
    good = {
        "user_id": "u1",
        "order_id": "o1",
        "amount": 3.5,
        "currency": "EUR",
        "category": "books",
        "created_at": T0,
        "items": 2,
    }
    with memory.open_output_stream("exports/2025/11/a.jsonl") as out:
        out.write((json.dumps(good) + "\n" + json.dumps({**good, "amount": "x"}) + "\n").encode())
    pq.write_table(
        pa.Table.from_pylist([{**good, "order_id": "o2"}, {**good, "order_id": "o3"}]),
        tmp_path / "b.parquet",
    )
    with memory.open_output_stream("exports/2025/11/b.parquet") as out:
        out.write((tmp_path / "b.parquet").read_bytes())
    with memory.open_output_stream("exports/2025/11/.hidden.jsonl") as out:
        out.write(b"{broken\n")
    sink = OfflineSink(Location(memory, "log"))
    done = backfill(view.source, ["exports/"], sink, filesystem=memory)
    assert [(p.path, p.row, p.reason) for p in done.problems] == [
        ("exports/2025/11/a.jsonl", 2, "bad_value")
    ]
    assert sorted(e.record["order_id"] for e in done.events) == ["o1", "o2", "o3"]
    log_rows = pq.ParquetDataset(done.files_written, filesystem=memory).read()
    assert log_rows.num_rows == 3

    # The same files again: the same names, so the log holds each row once.
    again = backfill(
        view.source, ["exports/"], OfflineSink(Location(memory, "log")), filesystem=memory
    )
    assert again.files_written == done.files_written
    assert len(files_under(Location(memory, "log"))) == len(done.files_written)
