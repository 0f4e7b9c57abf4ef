"""The offline event log: validated events appended to Parquet, replay-safe (DESIGN §4).

:class:`OfflineSink` writes each batch of a source's events as one file per UTC
date touched, under :func:`streamfs.offline.layout.source_dir`, with the explicit
schema of :func:`streamfs.offline.schema.log_schema`. A file is written under a
temporary name (``.tmp-...``, which readers ignore) and renamed into place; its
name carries the Kafka partition and offset range, so a replayed batch replaces
its file, and files of an earlier attempt at the same offsets that the replay
cut differently are removed once the new ones are in place
(:func:`streamfs.offline.layout.superseded`).

The worker calls :meth:`OfflineSink.write` for each processed batch before it
commits the batch's offsets. Writes block (pyarrow); call them from a thread in
async code (``await asyncio.to_thread(sink.write, source, events)``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import structlog
from pyarrow import fs

from streamfs.definitions import Source
from streamfs.errors import StreamfsError
from streamfs.ingest import Event
from streamfs.offline.layout import (
    FileRange,
    date_of,
    file_name,
    parse_file_name,
    source_dir,
    superseded,
)
from streamfs.offline.schema import log_schema
from streamfs.offline.storage import resolve_root

log = structlog.get_logger(__name__)

BACKFILL_PARTITION = -1
"""The partition number of events that came from files, not Kafka (``streamfs backfill``)."""


class OfflineWriteError(StreamfsError):
    """A log file could not be written; the message names it. Retry the batch."""


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
    for field in schema:
        values = meta.get(field.name)
        if values is None:
            name = field.name
            values = [e.record.get(name) for e in events]
        columns.append(pa.array(values, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


class OfflineSink:
    """Appends validated events to the Parquet log under ``root`` (see the module doc)."""

    def __init__(self, root: str, compression: str = "zstd") -> None:
        self.root = root
        self._fs, self._path = resolve_root(root)
        self._compression = compression
        self._schemas: dict[str, pa.Schema] = {}
        # (source, partition) -> files it has, and the offset its next batch should start at
        self._files: dict[tuple[str, int], list[tuple[str, FileRange]]] = {}
        self._next: dict[tuple[str, int], int] = {}

    def write(self, source: Source, events: Sequence[Event]) -> list[str]:
        """Append one batch of ``source`` events; returns the paths written."""
        by_partition: dict[int, list[Event]] = {}
        for event in events:
            by_partition.setdefault(event.partition, []).append(event)
        written: list[str] = []
        for partition, batch in by_partition.items():
            written += self._write_partition(source, partition, batch)
        return written

    def _schema(self, source: Source) -> pa.Schema:
        schema = self._schemas.get(source.name)
        if schema is None:
            schema = self._schemas[source.name] = log_schema(source)
        return schema

    def _write_partition(self, source: Source, partition: int, events: list[Event]) -> list[str]:
        offsets = [e.offset for e in events]
        batch = FileRange(partition, min(offsets), max(offsets))
        directory = source_dir(self._path, source.name)
        key = (source.name, partition)
        if self._next.get(key) != batch.first_offset:  # first batch here, or a replay
            self._files[key] = list(self._list(directory, partition))
        by_date: dict[str, list[Event]] = {}
        for event in events:
            by_date.setdefault(date_of(event.event_time_ms), []).append(event)
        schema = self._schema(source)
        written = []
        for date, dated in sorted(by_date.items()):
            target = f"{directory}/date={date}/{file_name(*_fields(batch))}"
            self._write_file(target, events_table(source, dated, schema))
            written.append(target)
        known = self._files.setdefault(key, [])
        for stale in superseded(known, batch):
            self._fs.delete_file(stale)
            log.info("offline_file_superseded", path=stale, by=written)
        stale_paths = set(superseded(known, batch))
        known[:] = [(p, r) for p, r in known if p not in stale_paths and p not in written]
        known += [(p, batch) for p in written]
        self._next[key] = batch.last_offset + 1
        return written

    def _write_file(self, target: str, table: pa.Table) -> None:
        directory, _, name = target.rpartition("/")
        temp = f"{directory}/.tmp-{name}-{uuid.uuid4().hex}"
        try:
            self._fs.create_dir(directory, recursive=True)
            with self._fs.open_output_stream(temp) as out:
                pq.write_table(table, out, compression=self._compression)
            self._fs.move(temp, target)
        except OSError as exc:
            raise OfflineWriteError(f"offline log file {target}: {exc}") from exc

    def _list(self, directory: str, partition: int) -> Iterable[tuple[str, FileRange]]:
        selector = fs.FileSelector(directory, recursive=True, allow_not_found=True)
        for info in self._fs.get_file_info(selector):
            parsed = parse_file_name(info.base_name)
            if parsed is not None and parsed.partition == partition:
                yield info.path, parsed


def _fields(r: FileRange) -> tuple[int, int, int]:
    return r.partition, r.first_offset, r.last_offset
