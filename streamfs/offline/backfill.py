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

With ``to_online``, :func:`current_state` reads back from the log every event of
the entities the backfill touched that a window open now can hold (backfilled and
streamed alike), and :func:`online_writes` folds them into each served view of
the source with the worker's own code (:class:`EntityTiles` over
:func:`compile_view`, evicted as the worker evicts) as Redis writes in the online
layout. Their offset (:func:`seed_offset`) is negative and grows with the time of
the backfill: a later backfill refreshes an earlier seed, but any write of the
worker (offsets from 0) wins. So it seeds entities the worker has not written:
the worker's state of an entity lives in its table and changelog, which a
backfill does not change. The worker starts an entity it has no state for from
its seed (:class:`streamfs.engine.PartitionEngine` ``seeds``), so the history
stays in the windows as the entity's new events stream in.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as pds
from pyarrow import fs

from streamfs.definitions import FeatureView, Source
from streamfs.definitions.compile import compile_view
from streamfs.ingest import Event
from streamfs.offline.inputs import InputFile, check, expand, required_key_and_time
from streamfs.offline.layout import source_dir
from streamfs.offline.location import Location
from streamfs.offline.log import BACKFILL_PARTITION, OfflineSink
from streamfs.offline.schema import log_schema
from streamfs.online import OnlineWrite, online_key
from streamfs.producer import RowProblem
from streamfs.tiles import EntityTiles

SEED_BASE = -(1 << 52)  # exact in Redis' Lua numbers (doubles), below any Kafka offset


def seed_offset(now_ms: int) -> int:
    """The offset of a seeding write: below every offset the worker writes (so the worker's
    state always wins), above the seeds of earlier backfills (so they are refreshed)."""
    return SEED_BASE + now_ms


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


def horizon_ms(view: FeatureView) -> int:
    """How far back of now an event can still count in one of the view's windows."""
    return max(g.horizon_ms + g.hop_ms for g in compile_view(view).layout.groups)


def current_state(
    root: str | Location,
    source: Source,
    entities: Iterable[str | int],
    since_ms: int,
) -> list[Event]:
    """Every event in the log of ``source`` for ``entities`` at or after ``since_ms``."""
    location = Location.of(root)
    directory = source_dir(location.path, source.name)
    if location.filesystem.get_file_info(directory).type != fs.FileType.Directory:
        return []
    wanted = sorted(set(entities), key=str)
    if not wanted:
        return []
    dataset = pds.dataset(
        directory,
        schema=log_schema(source),
        format="parquet",
        filesystem=location.filesystem,
        ignore_prefixes=[".", "_"],
        exclude_invalid_files=False,
    )
    table = dataset.to_table(
        filter=(pc.field("_event_time_ms") >= since_ms) & pc.field("_entity_key").isin(wanted)
    )
    return [
        Event(r["_entity_key"], r["_event_time_ms"], r, r["_partition"], r["_offset"])
        for r in table.to_pylist()
    ]


def online_writes(
    view: FeatureView,
    state_version: int,
    events: Sequence[Event],
    now_ms: int,
    namespace: str,
    evict_slack_ms: int = 60_000,
) -> list[OnlineWrite]:
    """Each entity's tiles for ``view`` from ``events``, as seeding Redis writes
    (offset :func:`seed_offset` of ``now_ms``)."""
    offset = seed_offset(now_ms)
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
                offset,
                tiles.encode(),
                tiles.last_event_time_ms,
                view.ttl_ms,
            )
        )
    return writes


Clock = Callable[[], int]
