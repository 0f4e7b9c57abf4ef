"""``streamfs offline compact``: merge a date partition's small files, same rows after.

Per source, date and Kafka partition, the files are merged into one, sorted by
offset and named by the merged offset range (:mod:`streamfs.offline.layout`), so
queries return exactly what they returned before. Steps, each safe to crash after:

1. drop files whose offset range lies inside another file's of the same partition
   and date (left over when an earlier compaction crashed before its deletes);
2. write the merged file under a temporary name, rename it into place;
3. delete the files it replaces (until then a reader may see their rows twice;
   step 1 of the next run cleans up if this one dies here).

Compact only dates the worker no longer writes into with uncommitted batches:
dates older than ``before`` (by default the day before yesterday, beyond any
source's allowed lateness in practice). A replay of a batch whose rows were
compacted would add them again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import structlog
from pyarrow import fs

from streamfs.definitions import Source
from streamfs.offline.layout import FileRange, file_name, parse_file_name, source_dir
from streamfs.offline.schema import log_schema
from streamfs.offline.storage import resolve_root

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Compacted:
    merged: int  # files written
    removed: int  # files deleted


def _contained(r: FileRange, others: list[FileRange]) -> bool:
    return any(
        o != r and o.first_offset <= r.first_offset and r.last_offset <= o.last_offset
        for o in others
    )


def compact(root: str, source: Source, before_date: str) -> Compacted:
    """Merge the files of every date of ``source`` earlier than ``before_date`` (YYYY-MM-DD)."""
    filesystem, path = resolve_root(root)
    directory = source_dir(path, source.name)
    selector = fs.FileSelector(directory, recursive=True, allow_not_found=True)
    groups: dict[tuple[str, int], list[tuple[str, FileRange]]] = {}
    for info in filesystem.get_file_info(selector):
        parsed = parse_file_name(info.base_name)
        date_dir = info.path.rpartition("/")[0]
        date = date_dir.rpartition("date=")[2]
        if parsed is not None and date < before_date:
            groups.setdefault((date_dir, parsed.partition), []).append((info.path, parsed))
    schema = log_schema(source)
    merged = removed = 0
    for (date_dir, partition), files in sorted(groups.items()):
        ranges = [r for _, r in files]
        for file_path, r in files:
            if _contained(r, ranges):
                filesystem.delete_file(file_path)
                removed += 1
        files = [(p, r) for p, r in files if not _contained(r, ranges)]
        if len(files) < 2:
            continue
        tables = [pq.read_table(p, filesystem=filesystem, schema=schema) for p, _ in files]
        table = pa.concat_tables(tables).sort_by("_offset")
        first = min(r.first_offset for _, r in files)
        last = max(r.last_offset for _, r in files)
        target = f"{date_dir}/{file_name(partition, first, last)}"
        temp = f"{date_dir}/.tmp-{uuid.uuid4().hex}"
        with filesystem.open_output_stream(temp) as out:
            pq.write_table(table, out, compression="zstd")
        filesystem.move(temp, target)
        merged += 1
        for file_path, _ in files:
            if file_path != target:
                filesystem.delete_file(file_path)
                removed += 1
        log.info("offline_compacted", directory=date_dir, partition=partition, files=len(files))
    return Compacted(merged, removed)
