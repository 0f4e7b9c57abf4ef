"""Where the offline log lives: one versioned path scheme, built here and nowhere else.

A source's events are Parquet files under::

    {root}/v1/source={source}/date={YYYY-MM-DD}/p{partition}-o{first:012d}-o{last:012d}.parquet

``date`` is the UTC day of the events' event time; ``first``/``last`` the Kafka offset
range of the batch that wrote the file. A replayed batch starts at an offset a
stored file already starts at (offsets are only committed after the sinks accepted
a batch), so the writer replaces, never duplicates (:func:`superseded`).

Pure: string and integer functions only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

LAYOUT_VERSION: Final = "v1"
_FILE: Final = re.compile(r"p(-?\d+)-o(\d+)-o(\d+)\.parquet")
DAY_MS: Final = 86_400_000


def source_dir(root: str, source: str) -> str:
    """The directory holding every file of ``source``."""
    return f"{root.rstrip('/')}/{LAYOUT_VERSION}/source={source}"


def date_of(event_time_ms: int) -> str:
    """The UTC date partition of an event time."""
    return datetime.fromtimestamp(event_time_ms // DAY_MS * 86_400, UTC).strftime("%Y-%m-%d")


def file_name(partition: int, first_offset: int, last_offset: int) -> str:
    return f"p{partition}-o{first_offset:012d}-o{last_offset:012d}.parquet"


@dataclass(frozen=True, slots=True, order=True)
class FileRange:
    """What a log file's name says: its Kafka partition and offset range."""

    partition: int
    first_offset: int
    last_offset: int


def parse_file_name(name: str) -> FileRange | None:
    """The range in a log file's base name, or ``None`` for any other file (temp files)."""
    match = _FILE.fullmatch(name)
    if match is None:
        return None
    return FileRange(int(match.group(1)), int(match.group(2)), int(match.group(3)))


def superseded(existing: Iterable[tuple[str, FileRange]], new: FileRange) -> list[str]:
    """The files a new batch replaces: same partition, starting at or after its first offset.

    Offsets are processed in order and committed only after a batch is written, so
    a batch starting at ``first`` means every offset from ``first`` on is being
    reprocessed; files from an earlier attempt at them are stale, whatever dates
    they cover and however that attempt cut its batches.
    """
    if new.partition < 0:  # backfills (no Kafka partition) replace only their own names
        return []
    return [
        path
        for path, r in existing
        if r.partition == new.partition and r.first_offset >= new.first_offset and r != new
    ]
