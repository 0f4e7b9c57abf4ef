"""``streamfs offline compact``: merge a date partition's small files, same rows after.

Per log directory (a source's events, a view version's snapshots), date and Kafka
partition, adjacent files are merged into files of up to ``target_bytes`` (by
the sizes of the files merged), each sorted by offset and named by the offset
range of the files it replaces (:mod:`streamfs.offline.layout`), so queries
return exactly what they returned before. Steps, each safe to crash after:

1. drop files whose offset range lies inside another file's of the same partition
   and date (left over when an earlier compaction or merge crashed before its
   deletes: :func:`streamfs.offline.rolling.contained`);
2. write each merged file under a temporary name, rename it into place;
3. delete the files it replaces (until then a reader may see their rows twice;
   step 1 of the next run cleans up if this one dies here).

Compact only dates the worker no longer writes into: dates older than ``before``
(by default yesterday; set it further back if a source's allowed lateness is
longer than a day). The worker itself already merges the files of the dates it
writes into (:mod:`streamfs.offline.rolling`), and a replay that reaches into a
compacted file cuts it back as it would its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import structlog
from pyarrow import fs

from streamfs.definitions import Source
from streamfs.offline.layout import (
    LAYOUT_VERSION,
    FileRange,
    file_name,
    parse_file_name,
    source_dir,
)
from streamfs.offline.location import Location
from streamfs.offline.rolling import contained, merged_range
from streamfs.offline.schema import log_schema

log = structlog.get_logger(__name__)

DEFAULT_TARGET_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class Compacted:
    merged: int  # files written
    removed: int  # files deleted

    def __add__(self, other: Compacted) -> Compacted:
        return Compacted(self.merged + other.merged, self.removed + other.removed)


@dataclass(frozen=True, slots=True)
class _File:
    path: str
    range: FileRange
    size: int


def compact(
    root: str | Location,
    source: Source,
    before_date: str,
    target_bytes: int = DEFAULT_TARGET_BYTES,
) -> Compacted:
    """Merge the event files of every date of ``source`` earlier than ``before_date``."""
    location = Location.of(root)
    directory = source_dir(location.path, source.name)
    return compact_directory(location, directory, log_schema(source), before_date, target_bytes)


def compact_snapshots(
    root: str | Location, before_date: str, target_bytes: int = DEFAULT_TARGET_BYTES
) -> Compacted:
    """Merge the snapshot files of every view version, dates before ``before_date``.

    The files of one view version share the schema they were written with (it is
    the version's), so they are merged with the schema of the first file read.
    """
    location = Location.of(root)
    views = f"{location.path}/{LAYOUT_VERSION}"
    done = Compacted(0, 0)
    for view in _subdirs(location.filesystem, views, "view="):
        for version in _subdirs(location.filesystem, view, "version="):
            done += compact_directory(location, version, None, before_date, target_bytes)
    return done


def _subdirs(filesystem: fs.FileSystem, directory: str, prefix: str) -> list[str]:
    selector = fs.FileSelector(directory, allow_not_found=True)
    return sorted(
        i.path
        for i in filesystem.get_file_info(selector)
        if i.type == fs.FileType.Directory and i.base_name.startswith(prefix)
    )


def compact_directory(
    location: Location,
    directory: str,
    schema: pa.Schema | None,
    before_date: str,
    target_bytes: int = DEFAULT_TARGET_BYTES,
) -> Compacted:
    """Compact one log directory (``date=...`` subdirectories below it); see the module doc."""
    filesystem = location.filesystem
    selector = fs.FileSelector(directory, recursive=True, allow_not_found=True)
    groups: dict[tuple[str, int], list[_File]] = {}
    for info in filesystem.get_file_info(selector):
        parsed = parse_file_name(info.base_name)
        date_dir = info.path.rpartition("/")[0]
        date = date_dir.rpartition("date=")[2]
        if parsed is not None and date < before_date:
            groups.setdefault((date_dir, parsed.partition), []).append(
                _File(info.path, parsed, info.size or 0)
            )
    merged = removed = 0
    for (date_dir, partition), files in sorted(groups.items()):
        stale = set(contained([(f.path, f.range) for f in files]))
        for path in sorted(stale):
            filesystem.delete_file(path)
            removed += 1
        live = sorted((f for f in files if f.path not in stale), key=lambda f: f.range)
        for run in _runs(live, target_bytes):
            if len(run) < 2:
                continue
            _merge(filesystem, date_dir, run, schema)
            merged += 1
            removed += len(run)
        log.info("offline_compacted", directory=date_dir, partition=partition, files=len(files))
    return Compacted(merged, removed)


def _runs(files: Sequence[_File], target_bytes: int) -> list[list[_File]]:
    """Adjacent files grouped so each group's sizes add up to at most ``target_bytes``."""
    runs: list[list[_File]] = []
    size = 0
    for f in files:
        if runs and size + f.size <= target_bytes:
            runs[-1].append(f)
            size += f.size
        else:
            runs.append([f])
            size = f.size
    return runs


def _merge(
    filesystem: fs.FileSystem, date_dir: str, run: Sequence[_File], schema: pa.Schema | None
) -> None:
    tables = []
    for f in run:
        table = pq.read_table(f.path, filesystem=filesystem, schema=schema)
        schema = table.schema
        tables.append(table)
    table = pa.concat_tables(tables).sort_by("_offset")
    r = merged_range([f.range for f in run])
    target = f"{date_dir}/{file_name(r.partition, r.first_offset, r.last_offset)}"
    temp = f"{date_dir}/.tmp-{uuid.uuid4().hex}"
    with filesystem.open_output_stream(temp) as out:
        pq.write_table(table, out, compression="zstd")
    filesystem.move(temp, target)
    for f in run:
        if f.path != target:
            filesystem.delete_file(f.path)
