"""The offline log writer: validated events and feature snapshots to Parquet, replay-safe.

:class:`OfflineSink` writes, per processed batch and Kafka partition,

- the source's events, one file per UTC event date touched, under
  :func:`streamfs.offline.layout.source_dir` with the explicit schema of
  :func:`streamfs.offline.schema.log_schema`;
- optionally each view's feature snapshots (:mod:`streamfs.offline.snapshots`),
  one file per view version under :func:`streamfs.offline.snapshots.view_dir`.

Every file is written under a temporary name (``.tmp-...``, which readers ignore)
and renamed into place, so no reader ever sees half a file. Its name carries the
Kafka partition and offset range (DESIGN §4): a replayed batch starting at offset
``s`` rewrites its files, deletes the files of an earlier attempt that start at or
after ``s`` (:func:`streamfs.offline.layout.superseded`) and cuts back a file that
started before ``s`` but reaches it (:func:`streamfs.offline.rolling.straddling`).
Small per-batch files are merged as the worker goes and files are closed by size
and by time (:mod:`streamfs.offline.rolling`). The root is a local path or any
pyarrow filesystem URI (:class:`streamfs.offline.location.Location`).

With ``background_merges`` (the worker's setting) a merge is written by a thread of
its own while the batches go on, so a batch waits only for its own small files: a
merged file is written under a temporary name there, and put in place (renamed, its
inputs deleted) by the next write of its partition, or by :meth:`OfflineSink.flush`.
Until then its inputs stay the visible files. A partition has one merge in flight at
a time, and a replay waits for it before it lists or cuts files.

While a merge or a replay's clean-up runs, a concurrent reader may see a row twice
for the milliseconds between the new file's rename and the old files' deletion;
a crash there leaves files that the next listing of the partition removes
(:func:`streamfs.offline.rolling.contained`), or that the replay which must
follow (the batch was not committed) replaces.

The worker calls :meth:`OfflineSink.write_batch` for each processed batch before it
commits the batch's offsets. Writes block (pyarrow); call them from a thread in
async code (``await asyncio.to_thread(sink.write_batch, ...)``). One sink may be
shared by the agents of several sources: each log directory has its own lock.
Files of a partition are only merged while a batch of that partition is written,
so a worker never touches the files of a partition it no longer owns.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog
from pyarrow import fs

from streamfs.definitions import Source
from streamfs.errors import StreamfsError
from streamfs.ingest import Event
from streamfs.offline.layout import (
    DAY_MS,
    FileRange,
    date_of,
    file_name,
    parse_file_name,
    source_dir,
    superseded,
)
from streamfs.offline.location import Location
from streamfs.offline.rolling import (
    OpenFile,
    RollPolicy,
    chunk_bounds,
    contained,
    merge_to_close,
    merged_range,
    should_roll,
    straddling,
    tier_merge,
)
from streamfs.offline.schema import log_schema
from streamfs.offline.snapshots import SnapshotView, snapshot_table, view_dir
from streamfs.online import DEFAULT_NAMESPACE, OnlineWrite
from streamfs.settings import Settings
from streamfs.tiles import EntityTiles

log = structlog.get_logger(__name__)

BACKFILL_PARTITION = -1
"""The partition number of events that came from files, not Kafka (``streamfs backfill``)."""


class OfflineWriteError(StreamfsError):
    """A log file could not be written; the message names it. Retry the batch."""


MERGE_ROWS = 131_072
"""Rows a merge holds in memory before it writes them out (bounds a merge's memory)."""

PART_WRITE_OPTIONS: dict[str, Any] = {"compression": "none", "use_dictionary": False}
"""How a part (one batch's file, merged away within a few batches) is written: no
compression and no dictionaries. A part of 150-600 rows writes in 0.25-0.5 ms that
way against 0.7-1.8 ms with zstd and dictionaries, and reads back for its merge in
0.7-1.0 ms against 0.9-1.4 (both ~2x larger); per-batch parts were half the
offline writer's Parquet work at 5,000 events/s. Statistics stay, for readers that
prune by them. Merged files, cut files, backfills and the file a closing segment
leaves are written with the sink's compression: a segment that closes with a single
part rewrites it so. Parts left by a worker that stopped without its final flush (a
crash) stay uncompressed until ``streamfs offline compact`` merges their date."""


def roll_policy(settings: Settings) -> RollPolicy:
    """The roll policy of ``STREAMFS_OFFLINE_ROLL_MB`` and ``STREAMFS_OFFLINE_ROLL_INTERVAL_S``."""
    return RollPolicy(
        roll_bytes=settings.offline_roll_mb << 20,
        roll_interval_ms=settings.offline_roll_interval_s * 1000,
    )


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def events_table(
    source: Source, events: Sequence[Event], schema: pa.Schema | None = None
) -> pa.Table:
    """``events`` as an Arrow table of the source's log schema (column by column)."""
    schema = log_schema(source) if schema is None else schema
    columns: list[pa.Array] = []
    meta: dict[str, list[Any]] = {
        "_entity_key": [e.entity_key for e in events],
        "_event_time_ms": [e.event_time_ms for e in events],
        "_partition": [e.partition for e in events],
        "_offset": [e.offset for e in events],
    }
    for f in schema:
        values = meta.get(f.name)
        if values is None:
            name = f.name
            values = [e.record.get(name) for e in events]
        columns.append(pa.array(values, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


@dataclass(slots=True)
class _Segment:
    """The open (not yet rolled) files of one partition in one date directory."""

    opened_ms: int
    files: list[OpenFile] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Merged:
    """A merge of ``inputs`` written to ``temp``, to be renamed to ``target``."""

    date_dir: str
    inputs: tuple[OpenFile, ...]
    temp: str
    file: OpenFile  # the merged file, at its final path
    closes: bool  # the merge closes its segment: the file joins none


@dataclass(slots=True)
class _Partition:
    """What the sink knows of one partition's files in one log directory."""

    schema: pa.Schema  # what its files are read and merged with
    known: dict[str, FileRange]  # every file of the partition, by path
    segments: dict[str, _Segment] = field(default_factory=dict)  # by date directory
    next_offset: int | None = None  # where a batch that continues the last one starts
    merging: Future[_Merged] | None = None  # the background merge in flight


class OfflineSink:
    """Appends validated events (and feature snapshots) to the Parquet log (module doc).

    ``policy`` sets when files are merged and closed (:class:`RollPolicy`);
    ``clock`` (epoch ms) times segments and stamps snapshots; ``background_merges``:
    merge on a thread of the sink's own, off the batches' path (module doc).
    """

    def __init__(
        self,
        root: str | Location,
        compression: str = "zstd",
        *,
        policy: RollPolicy | None = None,
        clock: Callable[[], int] = _wall_clock_ms,
        background_merges: bool = False,
    ) -> None:
        self.location = Location.of(root)
        self.root = root if isinstance(root, str) else str(root)
        self.policy = policy or RollPolicy()
        self._fs, self._path = self.location.filesystem, self.location.path
        self._compression = compression
        self._clock = clock
        self._schemas: dict[str, pa.Schema] = {}
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._merger = (
            ThreadPoolExecutor(1, thread_name_prefix="offline-merge") if background_merges else None
        )

    @classmethod
    def from_settings(
        cls, root: str | Location, settings: Settings, *, background_merges: bool = False
    ) -> OfflineSink:
        """A sink with the roll policy of ``STREAMFS_OFFLINE_ROLL_MB`` and ``_INTERVAL_S``."""
        return cls(root, policy=roll_policy(settings), background_merges=background_merges)

    # --- the worker's calls ---------------------------------------------------------------

    def write(self, source: Source, events: Sequence[Event]) -> list[str]:
        """Append one batch of ``source`` events; returns the paths written."""
        schema = self._schemas.get(source.name)
        if schema is None:
            schema = self._schemas[source.name] = log_schema(source)
        directory = source_dir(self._path, source.name)
        written: list[str] = []
        with self._lock(directory):
            for partition, batch in _by_partition(events).items():
                by_day: dict[int, list[Event]] = {}  # by UTC day number: one date string a day
                for event in batch:
                    by_day.setdefault(event.event_time_ms // DAY_MS, []).append(event)
                tables = {
                    date_of(day * DAY_MS): events_table(source, dated, schema)
                    for day, dated in by_day.items()
                }
                written += self._append(directory, schema, _range(partition, batch), tables)
        return written

    def write_snapshots(
        self,
        views: Sequence[SnapshotView],
        events: Sequence[Event],
        writes: Sequence[OnlineWrite],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        write_time_ms: int | None = None,
        tiles: Mapping[str, EntityTiles] | None = None,
    ) -> list[str]:
        """Append the feature snapshots of one batch: for each of ``views``, one row per
        entity of ``events`` that ``writes`` (the engine's online writes) holds, valued
        at ``write_time_ms`` (default: the sink's clock). ``tiles``: the decoded state
        of each write, by key, if the caller has it (saves decoding; see
        :func:`~streamfs.offline.snapshots.snapshot_table`). Returns the paths written."""
        now = self._clock() if write_time_ms is None else write_time_ms
        date = date_of(now)
        by_partition = _by_partition(events)
        written: list[str] = []
        for view in views:
            directory = view_dir(self._path, view.name, view.version)
            with self._lock(directory):
                for partition, batch in by_partition.items():
                    table = snapshot_table(view, batch, writes, now, namespace, tiles)
                    if table.num_rows:
                        written += self._append(
                            directory, view.schema, _range(partition, batch), {date: table}
                        )
        return written

    def write_batch(
        self,
        source: Source,
        events: Sequence[Event],
        writes: Sequence[OnlineWrite] = (),
        views: Sequence[SnapshotView] = (),
        *,
        namespace: str = DEFAULT_NAMESPACE,
        tiles: Mapping[str, EntityTiles] | None = None,
    ) -> list[str]:
        """:meth:`write` then :meth:`write_snapshots`: one call (one thread hop) per batch."""
        if not events:
            return []
        written = self.write(source, events)
        if views:
            written += self.write_snapshots(views, events, writes, namespace=namespace, tiles=tiles)
        return written

    def flush(self) -> list[str]:
        """Merge and close every open segment (call on shutdown); returns the files written."""
        written: list[str] = []
        for (directory, _), part in list(self._parts.items()):
            with self._lock(directory):
                if (merged := self._settle(part, wait=True)) is not None:
                    written.append(merged.path)
                for date_dir, segment in list(part.segments.items()):
                    if merge_to_close(segment.files):
                        written.append(self._merge(part, date_dir, segment.files).path)
                    del part.segments[date_dir]
        return written

    # --- one partition's batch -------------------------------------------------------------

    def _append(
        self, directory: str, schema: pa.Schema, batch: FileRange, tables: dict[str, pa.Table]
    ) -> list[str]:
        key = (directory, batch.partition)
        part = self._parts.get(key)
        replay = part is None or part.next_offset != batch.first_offset
        if part is not None:  # a finished merge goes in place; a replay waits for it
            self._settle(part, wait=replay)
        if part is None or replay:  # first batch here, or a replay, or a gap: look
            part = self._parts[key] = self._list(directory, schema, batch.partition, part)
        now = self._clock()
        written: list[tuple[str, OpenFile]] = []
        closed: set[str] = set()  # parts of a batch too big for one file: already full
        for date, table in sorted(tables.items()):
            date_dir = f"{directory}/date={date}"
            chunks = list(self._chunks(table, batch))
            merged_later = batch.partition >= 0 and len(chunks) == 1  # a part: cheap to write
            for r, chunk in chunks:
                path = f"{date_dir}/{file_name(r.partition, r.first_offset, r.last_offset)}"
                size = self._write_file(path, chunk, part=merged_later)
                written.append((date_dir, OpenFile(path, r, size)))
                if len(chunks) > 1:
                    closed.add(path)
        paths = {f.path for _, f in written}
        if replay and batch.partition >= 0:
            self._invalidate(part, batch, paths)
        for date_dir, f in written:
            part.known[f.path] = f.range
            if batch.partition >= 0 and f.path not in closed:  # backfills write once
                segment = part.segments.setdefault(date_dir, _Segment(now))
                segment.files = [s for s in segment.files if s.path != f.path] + [f]
        part.next_offset = batch.last_offset + 1
        self._roll(part, now)
        return [f.path for _, f in written]

    def _chunks(self, table: pa.Table, batch: FileRange) -> Iterable[tuple[FileRange, pa.Table]]:
        """``table`` in files of at most about ``roll_bytes`` (uncompressed), named by
        contiguous offset ranges covering ``batch``."""
        if table.nbytes <= self.policy.roll_bytes or table.num_rows < 2:
            yield batch, table
            return
        table = table.sort_by("_offset")
        offsets = table.column("_offset").to_pylist()
        rows = max(1, table.num_rows * self.policy.roll_bytes // table.nbytes)
        bounds = chunk_bounds(offsets, rows)
        first = batch.first_offset
        for i, (start, stop) in enumerate(bounds):
            last = batch.last_offset if i == len(bounds) - 1 else offsets[stop - 1]
            yield FileRange(batch.partition, first, last), table.slice(start, stop - start)
            first = last + 1

    def _invalidate(self, part: _Partition, batch: FileRange, written: set[str]) -> None:
        """A replay from ``batch.first_offset``: cut files reaching into it, drop later ones."""
        before = [(p, r) for p, r in part.known.items() if p not in written]
        for path, r in straddling(before, batch.partition, batch.first_offset):
            self._cut(part, path, r, batch.first_offset)
        for stale in superseded(before, batch):
            if stale not in written:
                self._delete(stale)
                part.known.pop(stale, None)
                log.info("offline_file_superseded", path=stale, by=sorted(written))
        for date_dir, segment in list(part.segments.items()):
            segment.files = [f for f in segment.files if part.known.get(f.path) == f.range]
            if not segment.files:
                del part.segments[date_dir]

    def _cut(self, part: _Partition, path: str, r: FileRange, at: int) -> None:
        """Keep only the rows of ``path`` before offset ``at``, under the name ``[first, at-1]``."""
        table = self._read(path, part.schema)
        kept = table.filter(pc.less(table.column("_offset"), pa.scalar(at, pa.int64())))
        part.known.pop(path)
        if kept.num_rows:
            target = f"{path.rpartition('/')[0]}/{file_name(r.partition, r.first_offset, at - 1)}"
            self._write_file(target, kept)
            part.known[target] = FileRange(r.partition, r.first_offset, at - 1)
        self._delete(path)
        log.info("offline_file_cut", path=path, at_offset=at, kept=kept.num_rows)

    # --- merging ---------------------------------------------------------------------------

    def _roll(self, part: _Partition, now: int) -> None:
        if self._merger is not None:
            self._roll_in_background(part, now)
            return
        for date_dir, segment in list(part.segments.items()):
            if should_roll(segment.files, segment.opened_ms, now, self.policy):
                if merge_to_close(segment.files):
                    self._merge(part, date_dir, segment.files)
                del part.segments[date_dir]
                continue
            while (group := tier_merge(segment.files, self.policy.fanout)) is not None:
                merged = self._merge(part, date_dir, group)
                at = segment.files.index(group[0])
                segment.files[at : at + len(group)] = [merged]

    def _roll_in_background(self, part: _Partition, now: int) -> None:
        """:meth:`_roll`'s decisions, one merge at a time, each on the merge thread."""
        assert self._merger is not None
        if part.merging is not None:
            return  # the next batch of the partition looks again
        for date_dir, segment in list(part.segments.items()):
            if should_roll(segment.files, segment.opened_ms, now, self.policy):
                del part.segments[date_dir]
                if merge_to_close(segment.files):
                    group, closes = segment.files, True
                    break
                continue
            if (tier := tier_merge(segment.files, self.policy.fanout)) is not None:
                group, closes = tier, False
                break
        else:
            return
        part.merging = self._merger.submit(
            self._write_merge, part.schema, date_dir, tuple(group), closes
        )

    def _settle(self, part: _Partition, *, wait: bool) -> OpenFile | None:
        """Put the partition's background merge in place if it is done (or ``wait``)."""
        future = part.merging
        if future is None or not (wait or future.done()):
            return None
        part.merging = None
        try:
            merged = future.result()
        except OfflineWriteError as exc:  # its inputs stay as they are, unmerged
            log.warning("offline_merge_failed", error=str(exc))
            return None
        self._put_in_place(part, merged)
        if not merged.closes and (segment := part.segments.get(merged.date_dir)) is not None:
            files, first = segment.files, merged.inputs[0]
            at = files.index(first) if first in files else -1
            if at >= 0 and tuple(files[at : at + len(merged.inputs)]) == merged.inputs:
                files[at : at + len(merged.inputs)] = [merged.file]
        return merged.file

    def _merge(self, part: _Partition, date_dir: str, files: Sequence[OpenFile]) -> OpenFile:
        """One file in place of ``files`` (adjacent, one partition and date)."""
        merged = self._write_merge(part.schema, date_dir, tuple(files), closes=False)
        self._put_in_place(part, merged)
        return merged.file

    def _write_merge(
        self, schema: pa.Schema, date_dir: str, files: tuple[OpenFile, ...], closes: bool
    ) -> _Merged:
        """The merge of ``files`` written under a temporary name (touches no sink state).

        Files whose offset ranges follow one another (as a partition's do) are streamed
        through in offset order, at most :data:`MERGE_ROWS` rows in memory at a time;
        others are read whole and sorted.
        """
        r = merged_range([f.range for f in files])
        target = f"{date_dir}/{file_name(r.partition, r.first_offset, r.last_offset)}"
        ordered = sorted(files, key=lambda f: f.range.first_offset)
        if all(a.range.last_offset < b.range.first_offset for a, b in itertools.pairwise(ordered)):
            temp, size = self._write_temp_chunks(
                target, schema, self._merge_chunks(ordered, schema)
            )
        else:
            tables = [self._read(f.path, schema) for f in files]
            temp, size = self._write_temp(target, pa.concat_tables(tables).sort_by("_offset"))
        level = max(f.level for f in files) + 1
        return _Merged(date_dir, files, temp, OpenFile(target, r, size, level), closes)

    def _put_in_place(self, part: _Partition, merged: _Merged) -> None:
        """Rename a written merge into place, then delete its inputs."""
        target = merged.file.path
        self._move(merged.temp, target)
        part.known[target] = merged.file.range
        for f in merged.inputs:
            if f.path != target:
                self._delete(f.path)
                part.known.pop(f.path, None)
        log.info(
            "offline_files_merged",
            path=target,
            files=len(merged.inputs),
            bytes=merged.file.size_bytes,
        )

    # --- the filesystem --------------------------------------------------------------------

    def _list(
        self, directory: str, schema: pa.Schema, partition: int, previous: _Partition | None
    ) -> _Partition:
        """Every file of ``partition`` under ``directory``; leftovers of a crashed merge go."""
        by_dir: dict[str, list[tuple[str, FileRange]]] = {}
        selector = fs.FileSelector(directory, recursive=True, allow_not_found=True)
        try:
            infos = self._fs.get_file_info(selector)
        except OSError as exc:
            raise OfflineWriteError(f"offline log {directory}: cannot list: {exc}") from exc
        for info in infos:
            parsed = parse_file_name(info.base_name)
            if parsed is not None and parsed.partition == partition:
                by_dir.setdefault(info.path.rpartition("/")[0], []).append((info.path, parsed))
        known: dict[str, FileRange] = {}
        for files in by_dir.values():
            stale = set(contained(files)) if partition >= 0 else set()
            for path, r in files:
                if path in stale:
                    self._delete(path)
                    log.info("offline_file_leftover_removed", path=path)
                else:
                    known[path] = r
        part = _Partition(schema, known)
        if previous is not None:  # keep open segments whose files are still there
            for date_dir, segment in previous.segments.items():
                still = [f for f in segment.files if known.get(f.path) == f.range]
                if still:
                    part.segments[date_dir] = _Segment(segment.opened_ms, still)
        return part

    def _read(self, path: str, schema: pa.Schema | None) -> pa.Table:
        try:
            return pq.read_table(path, filesystem=self._fs, schema=schema)
        except (OSError, pa.ArrowException) as exc:
            raise OfflineWriteError(f"offline log file {path}: cannot read: {exc}") from exc

    def _write_file(self, target: str, table: pa.Table, *, part: bool = False) -> int:
        """Write ``table`` to ``target`` atomically (temp name, rename); returns its size.
        ``part``: with :data:`PART_WRITE_OPTIONS`, for a file that a merge will replace."""
        temp, size = self._write_temp_chunks(target, table.schema, [table], part=part)
        self._move(temp, target)
        return size

    def _write_temp(self, target: str, table: pa.Table) -> tuple[str, int]:
        """Write ``table`` under a temporary name beside ``target`` (readers skip it)."""
        return self._write_temp_chunks(target, table.schema, [table])

    def _merge_chunks(self, files: Sequence[OpenFile], schema: pa.Schema) -> Iterator[pa.Table]:
        """The rows of ``files`` (in offset order) in tables of about MERGE_ROWS rows."""
        pending: list[pa.Table] = []
        rows = 0
        for f in files:
            table = self._read(f.path, schema).sort_by("_offset")
            pending.append(table)
            rows += table.num_rows
            if rows >= MERGE_ROWS:
                yield pa.concat_tables(pending)
                pending, rows = [], 0
        if pending:
            yield pa.concat_tables(pending)

    def _write_temp_chunks(
        self, target: str, schema: pa.Schema, chunks: Iterable[pa.Table], *, part: bool = False
    ) -> tuple[str, int]:
        """:meth:`_write_temp` of a table given in chunks, one row group or more each;
        returns the temporary path and the file's size."""
        directory, _, name = target.rpartition("/")
        temp = f"{directory}/.tmp-{name}-{uuid.uuid4().hex}"
        try:
            self._fs.create_dir(directory, recursive=True)
            with self._fs.open_output_stream(temp) as out:
                options = PART_WRITE_OPTIONS if part else {"compression": self._compression}
                with pq.ParquetWriter(out, schema, **options) as writer:
                    for chunk in chunks:
                        writer.write_table(chunk)
                size = int(out.tell())
        except (OSError, pa.ArrowException) as exc:
            raise OfflineWriteError(f"offline log file {target}: {exc}") from exc
        return temp, size

    def _move(self, temp: str, target: str) -> None:
        try:
            self._fs.move(temp, target)
        except (OSError, pa.ArrowException) as exc:
            raise OfflineWriteError(f"offline log file {target}: {exc}") from exc

    def _delete(self, path: str) -> None:
        try:
            self._fs.delete_file(path)
        except FileNotFoundError:
            pass  # gone already: another attempt's clean-up got there first
        except OSError as exc:
            raise OfflineWriteError(f"offline log file {path}: cannot delete: {exc}") from exc

    def _lock(self, directory: str) -> threading.Lock:
        with self._locks_lock:
            lock = self._locks.get(directory)
            if lock is None:
                lock = self._locks[directory] = threading.Lock()
            return lock


def _by_partition(events: Sequence[Event]) -> dict[int, list[Event]]:
    out: dict[int, list[Event]] = {}
    for event in events:
        out.setdefault(event.partition, []).append(event)
    return out


def _range(partition: int, events: Sequence[Event]) -> FileRange:
    offsets = [e.offset for e in events]
    return FileRange(partition, min(offsets), max(offsets))
