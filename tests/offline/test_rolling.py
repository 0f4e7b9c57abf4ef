"""The log writer's rolling and replay rules: pure decisions, then the sink on real files."""

from __future__ import annotations

import dataclasses
import itertools
import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyarrow import fs

from streamfs.ingest import Event
from streamfs.offline.layout import FileRange, parse_file_name
from streamfs.offline.location import Location
from streamfs.offline.log import OfflineSink, _Merged
from streamfs.offline.rolling import (
    OpenFile,
    RollPolicy,
    chunk_bounds,
    contained,
    should_roll,
    straddling,
    tier_merge,
)
from tests.offline.helpers import T0, random_events, rich_view

DAY = 86_400_000
SOURCE = rich_view().source


def events(n: int, seed: int = 1, days: int = 1, partition: int = 0) -> list[Event]:
    """``n`` events at offsets 0..n-1 spread over ``days`` UTC dates."""
    rng = random.Random(seed)
    out = []
    for e in random_events(rng, n):
        t = e.event_time_ms + rng.randrange(days) * DAY
        out.append(dataclasses.replace(e, event_time_ms=t, partition=partition))
    return out


def stored(location: Location) -> tuple[Counter[int], list[str]]:
    """Every offset in the visible log files (with multiplicity), and those files."""
    selector = fs.FileSelector(location.path, recursive=True, allow_not_found=True)
    files = sorted(
        i.path
        for i in location.filesystem.get_file_info(selector)
        if i.type == fs.FileType.File and parse_file_name(i.base_name) is not None
    )
    offsets: Counter[int] = Counter()
    for path in files:
        table = pq.read_table(path, filesystem=location.filesystem)
        offsets.update(table.column("_offset").to_pylist())
    return offsets, files


def name_range(path: str) -> FileRange:
    r = parse_file_name(path.rpartition("/")[2])
    assert r is not None
    return r


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


# --- pure -----------------------------------------------------------------------------------


def f(level: int, first: int, last: int, size: int = 10) -> OpenFile:
    return OpenFile(f"p0-{first}", FileRange(0, first, last), size, level)


def test_tier_merge_takes_fanout_files_of_the_lowest_full_level() -> None:
    files = [f(1, 0, 9), f(1, 10, 19), f(0, 20, 20), f(0, 21, 21), f(0, 22, 22)]
    assert tier_merge(files, 3) == files[2:]
    assert tier_merge(files[:4], 3) is None
    assert tier_merge([*files[:2], f(1, 20, 29)], 3) == [*files[:2], f(1, 20, 29)]


def test_should_roll_by_size_and_by_time() -> None:
    policy = RollPolicy(roll_bytes=100, roll_interval_ms=1_000, fanout=4)
    assert not should_roll([], 0, 10_000, policy)
    assert not should_roll([f(0, 0, 0, 60)], 0, 999, policy)
    assert should_roll([f(0, 0, 0, 60), f(0, 1, 1, 40)], 0, 1, policy)
    assert should_roll([f(0, 0, 0, 1)], 0, 1_000, policy)
    with pytest.raises(ValueError, match="fanout"):
        RollPolicy(fanout=1)


def test_contained_and_straddling() -> None:
    files = [
        ("a", FileRange(0, 0, 99)),
        ("b", FileRange(0, 0, 49)),  # inside a: a merge's input left behind
        ("c", FileRange(0, 100, 149)),
        ("d", FileRange(0, 120, 200)),  # overlaps c, inside neither
    ]
    assert contained(files) == ["b"]
    assert straddling(files, 0, 50) == [("a", FileRange(0, 0, 99))]
    assert straddling(files, 0, 100) == []
    assert straddling(files, 1, 50) == []


def test_chunk_bounds_never_split_an_offset() -> None:
    assert chunk_bounds([1, 2, 3, 4, 5], 2) == [(0, 2), (2, 4), (4, 5)]
    assert chunk_bounds([1, 1, 1, 2, 3], 2) == [(0, 3), (3, 5)]
    assert chunk_bounds([], 2) == []


# --- the sink -------------------------------------------------------------------------------


def test_small_batches_are_merged_in_tiers_and_every_row_stays_once(tmp_path: Path) -> None:
    location = Location.of(str(tmp_path))
    sink = OfflineSink(location, policy=RollPolicy(roll_bytes=1 << 30, fanout=4), clock=Clock())
    batch = events(400, days=2)
    for start in range(0, 400, 5):  # 80 batches, each touching both dates
        sink.write(SOURCE, batch[start : start + 5])
    offsets, files = stored(location)
    assert offsets == Counter(range(400))
    # 80 batches per date at fanout 4: 80 = 1*64 + 1*16 -> two files per date, not 80
    assert len(files) <= 2 * 2 * 3
    sink.flush()
    offsets, files = stored(location)
    assert offsets == Counter(range(400))
    assert len(files) == 2


def test_a_merge_streams_its_inputs_in_bounded_chunks_and_in_offset_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A merge of big files must not hold them all in memory: it writes at most about
    # MERGE_ROWS rows at a time, each chunk a row group, still one file in offset order.
    monkeypatch.setattr("streamfs.offline.log.MERGE_ROWS", 50)
    location = Location.of(str(tmp_path))
    sink = OfflineSink(location, policy=RollPolicy(roll_bytes=1 << 30, fanout=8), clock=Clock())
    batch = events(400, days=1)
    for start in range(0, 400, 20):  # 20 batches of 20 rows
        sink.write(SOURCE, batch[start : start + 20])
    sink.flush()
    offsets, files = stored(location)
    (path,) = files
    table = pq.read_table(path)
    assert table.column("_offset").to_pylist() == list(range(400))
    assert pq.ParquetFile(path).metadata.num_row_groups > 1
    row_groups = pq.ParquetFile(path).metadata
    assert all(
        row_groups.row_group(i).num_rows <= 400 // 2 for i in range(row_groups.num_row_groups)
    )
    assert offsets == Counter(range(400))


def test_files_close_by_size(tmp_path: Path) -> None:
    location = Location.of(str(tmp_path))
    sink = OfflineSink(location, policy=RollPolicy(roll_bytes=30_000, fanout=50), clock=Clock())
    batch = events(3_000)
    for start in range(0, 3_000, 100):
        sink.write(SOURCE, batch[start : start + 100])
    offsets, files = stored(location)
    assert offsets == Counter(range(3_000))
    sizes = [location.filesystem.get_file_info(p).size for p in files]
    assert 2 < len(files) < 30  # closed files of about roll_bytes, not one per batch
    assert max(sizes) < 30_000 + 20_000  # roll_bytes plus a batch at most


def test_files_close_by_time(tmp_path: Path) -> None:
    clock = Clock()
    location = Location.of(str(tmp_path))
    sink = OfflineSink(location, policy=RollPolicy(roll_interval_ms=60_000, fanout=50), clock=clock)
    batch = events(100)
    for start in range(0, 100, 10):
        sink.write(SOURCE, batch[start : start + 10])
        clock.now += 10_000
    offsets, files = stored(location)
    assert offsets == Counter(range(100))
    # closed at 60 s (batches 0-6), then 3 batches of the next minute still open
    assert [name_range(p) for p in files] == [
        FileRange(0, 0, 69),
        FileRange(0, 70, 79),
        FileRange(0, 80, 89),
        FileRange(0, 90, 99),
    ]


def codecs(path: str) -> set[str]:
    metadata = pq.ParquetFile(path).metadata
    return {
        metadata.row_group(g).column(c).compression
        for g in range(metadata.num_row_groups)
        for c in range(metadata.num_columns)
    }


def on_day(batch: list[Event], day: int) -> list[Event]:
    return [dataclasses.replace(e, event_time_ms=T0 + day * DAY) for e in batch]


def test_parts_are_written_uncompressed_and_every_closed_file_compressed(tmp_path: Path) -> None:
    clock = Clock()
    location = Location.of(str(tmp_path))
    sink = OfflineSink(location, policy=RollPolicy(roll_interval_ms=60_000, fanout=50), clock=clock)
    batch = events(40)
    sink.write(SOURCE, on_day(batch[:10], 0))
    (part,) = stored(location)[1]
    assert codecs(part) == {"UNCOMPRESSED"}  # a part: merged away later, written fast
    clock.now += 10_000
    sink.write(SOURCE, on_day(batch[10:20], 2))
    clock.now += 60_000
    sink.write(SOURCE, on_day(batch[20:30], 2))
    # Both segments closed: day 0's with its one part rewritten in place, day 2's merged.
    offsets, files = stored(location)
    assert offsets == Counter(range(30))
    assert [name_range(p) for p in files] == [FileRange(0, 0, 9), FileRange(0, 10, 29)]
    assert all(codecs(p) == {"ZSTD"} for p in files)
    sink.write(SOURCE, on_day(batch[30:], 2))
    assert codecs(stored(location)[1][-1]) == {"UNCOMPRESSED"}
    sink.flush()  # shutdown: the lone part of the open segment gets the final encoding
    offsets, files = stored(location)
    assert offsets == Counter(range(40))
    assert [name_range(p) for p in files][-1] == FileRange(0, 30, 39)
    assert all(codecs(p) == {"ZSTD"} for p in files)


def test_background_merges_close_a_lone_part_compressed_too(tmp_path: Path) -> None:
    clock = Clock()
    location = Location.of(str(tmp_path))
    policy = RollPolicy(roll_interval_ms=60_000, fanout=50)
    sink = OfflineSink(location, policy=policy, clock=clock, background_merges=True)
    batch = events(30)
    sink.write(SOURCE, on_day(batch[:10], 0))
    clock.now += 70_000
    sink.write(SOURCE, on_day(batch[10:20], 2))  # day 0's segment closes on the merge thread
    sink.write(SOURCE, on_day(batch[20:], 2))  # and is put in place here (or at the flush)
    sink.flush()
    offsets, files = stored(location)
    assert offsets == Counter(range(30))
    assert [name_range(p) for p in files] == [FileRange(0, 0, 9), FileRange(0, 10, 29)]
    assert all(codecs(p) == {"ZSTD"} for p in files)


def test_one_huge_batch_is_split_into_files_of_about_roll_bytes(tmp_path: Path) -> None:
    location = Location.of(str(tmp_path))
    sink = OfflineSink(location, policy=RollPolicy(roll_bytes=50_000))
    sink.write(SOURCE, events(2_000))
    offsets, files = stored(location)
    assert offsets == Counter(range(2_000))
    ranges = [name_range(p) for p in files]
    assert len(ranges) > 3
    assert (ranges[0].first_offset, ranges[-1].last_offset) == (0, 1_999)
    for a, b in itertools.pairwise(ranges):
        assert a.last_offset + 1 == b.first_offset


def test_a_replay_into_a_merged_file_cuts_it_back(tmp_path: Path) -> None:
    """The worker committed up to offset 39 of 60 written: a new worker replays from 40."""
    location = Location.of(str(tmp_path))
    policy = RollPolicy(roll_bytes=1 << 30, fanout=3)
    sink = OfflineSink(location, policy=policy, clock=Clock())
    first = events(60, seed=2, days=2)
    for start in range(0, 60, 10):
        sink.write(SOURCE, first[start : start + 10])
    _, files = stored(location)
    assert any(name_range(p) == FileRange(0, 0, 29) for p in files)

    again = OfflineSink(location, policy=policy, clock=Clock())  # after a crash
    replay = events(80, seed=3, days=2)[40:]  # other cut, other dates: the same offsets
    for start in range(0, 40, 15):
        again.write(SOURCE, replay[start : start + 15])
    offsets, _ = stored(location)
    assert offsets == Counter(range(80))
    for path in stored(location)[1]:
        table = pq.read_table(path)
        for offset, t in zip(
            table.column("_offset").to_pylist(),
            table.column("_event_time_ms").to_pylist(),
            strict=True,
        ):
            expected = first[offset] if offset < 40 else replay[offset - 40]
            assert t == expected.event_time_ms


@pytest.mark.parametrize("background", [False, True], ids=["inline-merges", "background-merges"])
def test_a_replay_in_the_same_process_and_leftovers_of_a_crashed_merge(
    tmp_path: Path, background: bool
) -> None:
    location = Location.of(str(tmp_path))
    policy = RollPolicy(roll_bytes=1 << 30, fanout=4)
    sink = OfflineSink(location, policy=policy, clock=Clock(), background_merges=background)
    batch = events(100)
    for start in range(0, 80, 10):
        sink.write(SOURCE, batch[start : start + 10])
    sink.write(SOURCE, batch[35:50])  # replay from 35 (a rebalance came back)
    sink.write(SOURCE, batch[50:100])
    sink.flush()
    assert stored(location)[0] == Counter(range(100))

    # A merge that crashed after its rename: its inputs are still there.
    _, files = stored(location)
    merged = next(p for p in files if name_range(p) == FileRange(0, 0, 34))
    directory = merged.rpartition("/")[0]
    table = pq.read_table(merged)
    pq.write_table(table.slice(0, 10), f"{directory}/p0-o000000000000-o000000000009.parquet")
    pq.write_table(table.slice(10, 10), f"{directory}/p0-o000000000010-o000000000019.parquet")
    (Path(directory) / ".tmp-p0-o000000000100-o000000000109.parquet-dead").write_bytes(b"PAR1")
    assert stored(location)[0] != Counter(range(100))
    fresh = OfflineSink(location, policy=policy, clock=Clock())
    fresh.write(SOURCE, events(110)[100:])
    assert stored(location)[0] == Counter(range(110))


@pytest.mark.parametrize("background", [False, True], ids=["inline-merges", "background-merges"])
@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 12), min_size=1, max_size=25),
    crashes=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3)), max_size=4),
    fanout=st.integers(2, 4),
)
def test_any_crash_and_replay_ends_with_every_row_once(
    background: bool, cuts: list[int], crashes: list[tuple[int, int]], fanout: int
) -> None:
    """Batches of random sizes; at random batches the worker dies, and the next one
    replays from a batch boundary at or after the last commit (the commit lags by up to
    three batches), cut differently. The visible log always ends with each offset once."""
    filesystem = fs.SubTreeFileSystem("/", fs._MockFileSystem())
    location = Location(filesystem, "log")
    total = sum(cuts)
    source_events = events(total, seed=7, days=3)
    boundaries = [0]
    for size in cuts:
        boundaries.append(boundaries[-1] + size)
    clock = Clock()
    policy = RollPolicy(roll_bytes=6_000, roll_interval_ms=5_000, fanout=fanout)
    sink = OfflineSink(location, policy=policy, clock=clock, background_merges=background)
    crash_at = dict(crashes)
    batch_no, committed = 0, 0
    while batch_no < len(cuts):
        lo, hi = boundaries[batch_no], boundaries[batch_no + 1]
        sink.write(SOURCE, source_events[lo:hi])
        clock.now += 1_000
        if batch_no in crash_at:
            lag = crash_at.pop(batch_no)
            committed = max(committed, batch_no + 1 - lag)
            sink = OfflineSink(location, policy=policy, clock=clock, background_merges=background)
            batch_no = committed
            if batch_no < len(cuts) and cuts[batch_no] > 1:  # replay cut another way
                size = cuts[batch_no]
                mid = boundaries[batch_no] + size // 2
                boundaries.insert(batch_no + 1, mid)
                cuts[batch_no : batch_no + 1] = [size // 2, size - size // 2]
            continue
        batch_no += 1
        committed = max(committed, batch_no - 2)
        assert stored(location)[0] == Counter(range(batch_no and boundaries[batch_no]))
    sink.flush()
    assert stored(location)[0] == Counter(range(total))


class GatedSink(OfflineSink):
    """Background merges that wait for ``gate`` before they write."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def _write_merge(self, *args: Any, **kwargs: Any) -> _Merged:
        assert self.gate.wait(30), "the test never opened the gate"
        return super()._write_merge(*args, **kwargs)


def test_background_merges_leave_the_batches_their_own_pace(tmp_path: Path) -> None:
    """A batch does not wait for a merge; until a merge is put in place its inputs are
    the visible files, so every row shows exactly once all along."""
    location = Location.of(str(tmp_path))
    policy = RollPolicy(roll_bytes=1 << 30, fanout=2)
    sink = GatedSink(location, policy=policy, clock=Clock(), background_merges=True)
    batch = events(200)
    for start in range(0, 100, 10):  # the first merge starts after batch 2, then blocks
        sink.write(SOURCE, batch[start : start + 10])
        assert stored(location)[0] == Counter(range(start + 10))
    assert len(stored(location)[1]) == 10  # nothing merged yet, and no batch waited

    sink.gate.set()
    for start in range(100, 200, 10):
        sink.write(SOURCE, batch[start : start + 10])
        assert stored(location)[0] == Counter(range(start + 10))
    offsets, files = stored(location)
    assert len(files) < 20  # merges went in place as the batches went on
    sink.flush()
    offsets, files = stored(location)
    assert offsets == Counter(range(200))
    assert [name_range(p) for p in files] == [FileRange(0, 0, 199)]
