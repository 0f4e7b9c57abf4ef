"""Batch ingestion: rows from files into the offline log, and optionally into Redis.

:func:`backfill` reads Parquet, CSV or JSON Lines files with the producer's reader
(:func:`streamfs.producer.check_file`: every row checked against the source's
reader schema, a bad row reported by file and row), appends the good rows to the
offline log as events of partition :data:`~streamfs.offline.log.BACKFILL_PARTITION`,
and returns the bad ones for a rejects file. Good rows always go on.

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

from streamfs.definitions import FeatureView, Source
from streamfs.definitions.compile import compile_view
from streamfs.ingest import Event
from streamfs.offline.log import BACKFILL_PARTITION, OfflineSink
from streamfs.online import OnlineWrite, online_key
from streamfs.producer import RowProblem, check_file
from streamfs.tiles import EntityTiles

SEED_OFFSET = -1  # loses to any offset the worker writes: backfill only seeds


@dataclass(frozen=True, slots=True)
class Backfilled:
    events: list[Event]
    problems: list[RowProblem]
    files_written: list[str]


def first_offset(source: Source, paths: Sequence[Path]) -> int:
    """A stable base offset for this set of files (same files, same offsets)."""
    names = sorted(f"{p.resolve()}:{p.stat().st_size}" for p in paths)
    return zlib.crc32("\n".join([source.name, *names]).encode()) << 24


def backfill(source: Source, paths: Sequence[Path], sink: OfflineSink) -> Backfilled:
    """Check every row of ``paths``, append the good ones to the log (module doc)."""
    events: list[Event] = []
    problems: list[RowProblem] = []
    offset = first_offset(source, paths)
    for path in paths:
        checked = check_file(path, source.reader_schema)
        problems += checked.problems
        for record in checked.records:
            key, time_ms = record.get(source.key_field), record.get(source.event_time_field)
            if key is None or time_ms is None:
                field = source.key_field if key is None else source.event_time_field
                problems.append(RowProblem(str(path), 0, "missing_field", f"{field} is null"))
                continue
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
