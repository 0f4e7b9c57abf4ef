"""Batch ingestion: rows from files into the offline log, and optionally into Redis.

:func:`backfill` reads Parquet, CSV or JSON Lines files, directories of them or
pyarrow filesystem URIs (:mod:`streamfs.offline.inputs`) with the producer's
reader: every row is checked against the source's reader schema (key and event
time required), a bad row is reported by file and row. The good rows are
appended to the offline log as events of partition
:data:`~streamfs.offline.log.BACKFILL_PARTITION`; the bad ones are returned for a
rejects file. Good rows always go on.

Backfilled events are numbered from an offset derived from the files' names and
sizes, so running the same backfill again replaces its log files instead of
adding rows twice; their offsets also order ties for first/last.

With ``to_online``, :func:`online_writes` folds the backfilled events into each
served view of the source with the worker's own code (:class:`EntityTiles` over
:func:`compile_view`) and returns the Redis writes in the online layout. They are
written with offset -1, so they only seed entities the worker has not written
yet: an entity's state in the worker's table (and so in Redis after its next
event) does not include backfilled events, by design of the changelog.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyarrow import fs

from streamfs.definitions import FeatureView, Source
from streamfs.definitions.compile import compile_view
from streamfs.ingest import Event
from streamfs.offline.inputs import InputFile, check, expand, required_key_and_time
from streamfs.offline.log import BACKFILL_PARTITION, OfflineSink
from streamfs.online import OnlineWrite, online_key
from streamfs.producer import RowProblem
from streamfs.tiles import EntityTiles

SEED_OFFSET = -1  # loses to any offset the worker writes: backfill only seeds


@dataclass(frozen=True, slots=True)
class Backfilled:
    events: list[Event]
    problems: list[RowProblem]
    files_written: list[str]


def first_offset(source: Source, files: Sequence[InputFile]) -> int:
    """A stable base offset for this set of files (same files, same offsets)."""
    names = sorted(f"{f.location.filesystem.type_name}:{f.location.path}:{f.size}" for f in files)
    return zlib.crc32("\n".join([source.name, *names]).encode()) << 24


def backfill(
    source: Source,
    paths: Sequence[str | Path],
    sink: OfflineSink,
    *,
    filesystem: fs.FileSystem | None = None,
) -> Backfilled:
    """Check every row of ``paths`` (paths, directories, URIs; or paths in ``filesystem``),
    append the good ones to the log (module doc)."""
    files = expand(paths, filesystem)
    schema = required_key_and_time(source)
    events: list[Event] = []
    problems: list[RowProblem] = []
    offset = first_offset(source, files)
    for f in files:
        checked = check(f, schema)
        problems += checked.problems
        for record in checked.records:
            key, time_ms = record[source.key_field], record[source.event_time_field]
            events.append(Event(key, time_ms, record, BACKFILL_PARTITION, offset))
            offset += 1
    written = sink.write(source, events) if events else []
    return Backfilled(events, problems, written)


def write_rejects(problems: Sequence[RowProblem], path: Path) -> None:
    """One JSON line per bad row: file, row, reason, detail."""
    with path.open("w", encoding="utf-8") as out:
        for p in problems:
            out.write(
                json.dumps({"file": p.path, "row": p.row, "reason": p.reason, "detail": p.detail})
            )
            out.write("\n")


def online_writes(
    view: FeatureView,
    state_version: int,
    events: Sequence[Event],
    now_ms: int,
    namespace: str,
    evict_slack_ms: int = 60_000,
) -> list[OnlineWrite]:
    """Each entity's tiles for ``view`` from ``events``, as seeding Redis writes."""
    compiled = compile_view(view)
    by_entity: dict[str | int, EntityTiles] = {}
    for event in sorted(events, key=lambda e: e.offset):
        tiles = by_entity.get(event.entity_key)
        if tiles is None:
            tiles = by_entity[event.entity_key] = EntityTiles(compiled.layout)
        tiles.add_event(event.event_time_ms, compiled.inputs(event.record), event.offset)
    writes = []
    for entity, tiles in by_entity.items():
        tiles.evict(now_ms - evict_slack_ms)
        if tiles.is_empty() or tiles.last_event_time_ms is None:
            continue  # all of it older than any window: nothing to serve
        writes.append(
            OnlineWrite(
                online_key(view.name, state_version, entity, namespace),
                SEED_OFFSET,
                tiles.encode(),
                tiles.last_event_time_ms,
                view.ttl_ms,
            )
        )
    return writes


Clock = Callable[[], int]
