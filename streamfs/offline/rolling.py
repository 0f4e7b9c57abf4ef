"""When log files are merged, and which files a replay invalidates: pure decisions.

The worker commits a batch's offsets only after the sinks accepted it, so every
batch must be durable in its own file before the worker moves on: a Parquet file
cannot be appended to, and an in-memory buffer would lose committed rows in a
crash. Small batches therefore make small files (*parts*), and the writer merges
them as it goes, per Kafka partition and date directory (a *segment*):

- **tiers**: whenever ``fanout`` files of the same level sit in a segment, they
  are merged into one file of the next level, so a segment never holds more
  than about ``fanout`` files per level and each row is rewritten only once per
  level (levels grow by a factor of ``fanout``: 3 levels cover 512 batches at 8);
- **size**: once a segment's files reach ``roll_bytes`` together, they are merged
  into one file and the segment closes: no file grows past about ``roll_bytes``
  plus one batch;
- **time**: a segment open for ``roll_interval_ms`` is merged and closed the same
  way, so a slow stream ends with one file per interval, not one per batch.

Parts are written for speed (uncompressed), merged files for size; a segment that
closes holding a single part rewrites it (:func:`merge_to_close`).

A merged file is named by the offset range of the files it replaces; it is
written under a temporary name, renamed into place, and only then are its inputs
deleted. A crash in between leaves inputs whose ranges lie inside the merged
file's: :func:`contained` names them, and the writer deletes them when it next
lists the partition (as ``streamfs offline compact`` does).

A replayed batch starts at offset ``s`` and invalidates every row of its
partition at offsets ``>= s``: files that start at or after ``s`` go whole
(:func:`streamfs.offline.layout.superseded`), a file that started before ``s``
but reaches it (:func:`straddling`: a merged file covers many batches, and the
worker may have committed only some of them) is cut back to its rows before
``s``.

Pure: values and lists in, decisions out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamfs.offline.layout import FileRange


@dataclass(slots=True)
class OpenFile:
    """A file of an open segment: where it is, its offsets, its size and merge level."""

    path: str
    range: FileRange
    size_bytes: int
    level: int = 0


@dataclass(frozen=True, slots=True)
class RollPolicy:
    """How big a file grows (``roll_bytes``), how long a segment stays open, the tier fanout."""

    roll_bytes: int = 64 << 20
    roll_interval_ms: int = 600_000
    fanout: int = 8

    def __post_init__(self) -> None:
        if self.roll_bytes < 1 or self.roll_interval_ms < 0 or self.fanout < 2:
            raise ValueError(
                f"roll policy needs roll_bytes >= 1, roll_interval_ms >= 0, fanout >= 2: {self}"
            )


def should_roll(files: Sequence[OpenFile], opened_ms: int, now_ms: int, policy: RollPolicy) -> bool:
    """Whether a segment is full (by size) or old (by time) and must be closed now."""
    if not files:
        return False
    if sum(f.size_bytes for f in files) >= policy.roll_bytes:
        return True
    return now_ms - opened_ms >= policy.roll_interval_ms


def merge_to_close(files: Sequence[OpenFile]) -> bool:
    """Whether a closing segment's files are rewritten: several become one, and a lone
    part (level 0, written for speed rather than size) takes the final encoding."""
    return len(files) > 1 or (len(files) == 1 and files[0].level == 0)


def tier_merge(files: Sequence[OpenFile], fanout: int) -> list[OpenFile] | None:
    """The files to merge next: ``fanout`` files of the lowest level that has that many.

    Files are appended in offset order and merged ones take the place of their
    inputs, so levels never grow from older to newer files and the files of one
    level are adjacent: the merged range covers no file outside the group.
    """
    by_level: dict[int, list[OpenFile]] = {}
    for f in files:
        by_level.setdefault(f.level, []).append(f)
    for level in sorted(by_level):
        group = by_level[level]
        if len(group) >= fanout:
            return group[:fanout]
    return None


def merged_range(files: Sequence[FileRange]) -> FileRange:
    """The name of a file merging ``files`` (one partition): their whole offset span."""
    return FileRange(
        files[0].partition,
        min(r.first_offset for r in files),
        max(r.last_offset for r in files),
    )


def contained(files: Sequence[tuple[str, FileRange]]) -> list[str]:
    """Files whose range lies inside another file's (one partition and directory).

    Such a file is left over from a merge (or a cut) that crashed before deleting
    its inputs: the larger file already holds its rows. Of two files with the
    same range (impossible by name in one directory) neither is listed.
    """
    out = []
    for path, r in files:
        for other_path, o in files:
            if other_path == path or o == r:
                continue
            if o.first_offset <= r.first_offset and r.last_offset <= o.last_offset:
                out.append(path)
                break
    return out


def straddling(
    files: Sequence[tuple[str, FileRange]], partition: int, first_offset: int
) -> list[tuple[str, FileRange]]:
    """Files of ``partition`` that start before ``first_offset`` and reach it (a replay cuts)."""
    return [
        (path, r)
        for path, r in files
        if r.partition == partition and r.first_offset < first_offset <= r.last_offset
    ]


def chunk_bounds(offsets: Sequence[int], rows_per_file: int) -> list[tuple[int, int]]:
    """Row slices ``(start, stop)`` of at most ``rows_per_file`` over sorted ``offsets``,
    never splitting rows that share an offset (their file names would overlap)."""
    bounds = []
    start, n = 0, len(offsets)
    while start < n:
        stop = min(start + max(1, rows_per_file), n)
        while stop < n and offsets[stop] == offsets[stop - 1]:
            stop += 1
        bounds.append((start, stop))
        start = stop
    return bounds
