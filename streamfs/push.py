"""Pushing events: JSON records checked against a source's reader schema, then produced.

The one path behind ``FeatureStore.push`` and ``POST /v1/push/{source}``. A batch is
checked whole before anything is sent (:func:`check_events`), so a rejected batch
writes nothing; every misfit is reported, each with its event index and field:

- ``not_an_object``: the event is not a JSON object;
- ``missing_field`` / ``bad_value``: as :func:`streamfs.producer.coerce_fields`
  and fastavro's validation judge the reader schema's fields (so also a null
  entity key or event time, which ingestion would send to the DLQ);
- ``future``: event time more than the source's ``max_future_skew_ms`` ahead of now,
  which the worker would reject as well.

Fields the schema does not have are ignored, as Avro schema resolution drops them.
Accepted events are Avro-encoded in the Confluent wire format with the reader
schema registered under the source's subject (:class:`~streamfs.schemas.codec.Encoder`)
and produced keyed by the entity key, with acks from all replicas.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema
from fastavro.validation import ValidationError, validate

from streamfs.definitions import Source
from streamfs.definitions.codec import source_from_json
from streamfs.errors import ConfigError, StreamfsError
from streamfs.producer import coerce_fields
from streamfs.registry.state import RegistryState
from streamfs.schemas.codec import Encoder


@dataclass(frozen=True, slots=True)
class EventProblem:
    """Why one event (``index`` in the batch) cannot be pushed; ``field`` None: the whole."""

    index: int
    field: str | None
    reason: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "field": self.field,
            "reason": self.reason,
            "detail": self.detail,
        }


class PushRejectedError(StreamfsError):
    """A pushed batch did not fit its source; nothing of it was sent. ``problems`` lists all."""

    def __init__(self, source: str, problems: Sequence[EventProblem]) -> None:
        self.source, self.problems = source, list(problems)
        shown = "; ".join(
            f"event {p.index}" + (f" field {p.field}" if p.field else "") + f": {p.detail}"
            for p in self.problems[:5]
        )
        more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"push to source {source!r} rejected: {shown}{more}")


class UnknownSourceError(StreamfsError):
    """A push named a source the registry does not hold."""


@dataclass(frozen=True, slots=True)
class SourceSchema:
    """A source's reader schema parsed once: its fields by name and fastavro's form."""

    source: Source
    fields: dict[str, Any]
    parsed: Any

    @classmethod
    def of(cls, source: Source) -> SourceSchema:
        schema = json.loads(source.reader_schema)
        return cls(source, {f["name"]: f for f in schema["fields"]}, parse_schema(schema))


def check_events(
    schema: SourceSchema, events: Sequence[Any], now_ms: int
) -> tuple[list[dict[str, Any]], list[EventProblem]]:
    """The events as records of the reader schema, and every problem (see the module doc)."""
    source = schema.source
    records: list[dict[str, Any]] = []
    problems: list[EventProblem] = []
    for index, event in enumerate(events):
        if not isinstance(event, Mapping):
            problems.append(EventProblem(index, None, "not_an_object", "not a JSON object"))
            continue
        record, misfits = coerce_fields(event, schema.fields, from_text=False)
        found = [EventProblem(index, m.field, m.reason, m.detail) for m in misfits]
        for field in (source.key_field, source.event_time_field):
            if not any(p.field == field for p in found) and record.get(field) is None:
                found.append(EventProblem(index, field, "missing_field", f"{field} is null"))
        event_time = record.get(source.event_time_field)
        if isinstance(event_time, int) and event_time > now_ms + source.max_future_skew_ms:
            found.append(
                EventProblem(
                    index,
                    source.event_time_field,
                    "future",
                    f"{source.event_time_field} is {event_time - now_ms} ms ahead of now"
                    f" (at most {source.max_future_skew_ms} allowed)",
                )
            )
        if not found:
            try:
                validate(record, schema.parsed, raise_errors=True)
            except ValidationError as exc:
                found.append(EventProblem(index, None, "bad_value", "; ".join(exc.errors)))
        if found:
            problems.extend(found)
        else:
            records.append(record)
    return records, problems


class Pusher:
    """Checks and produces pushed events; one Kafka producer and schema registration per
    source, opened on first use. Use from one event loop; :meth:`close` when done."""

    def __init__(
        self,
        kafka_bootstrap: str | None,
        schema_registry_url: str | None,
        clock: Callable[[], int],
    ) -> None:
        self._bootstrap, self._registry_url, self._clock = (
            kafka_bootstrap,
            schema_registry_url,
            clock,
        )
        self._producer: Any = None  # aiokafka ships no type information
        self._encoders: dict[tuple[str, str], Encoder] = {}
        self._schemas: dict[Source, SourceSchema] = {}
        self._lock = asyncio.Lock()

    def check(self, source: Source, events: Sequence[Any]) -> list[dict[str, Any]]:
        """The records to send; :class:`PushRejectedError` listing every problem if any."""
        schema = self._schemas.get(source)
        if schema is None:
            schema = self._schemas[source] = SourceSchema.of(source)
        records, problems = check_events(schema, events, self._clock())
        if problems:
            raise PushRejectedError(source.name, problems)
        return records

    async def push(self, source: Source, events: Sequence[Any]) -> int:
        """Check the whole batch, then produce it; returns how many events were sent."""
        records = self.check(source, events)
        if not records:
            return 0
        encoder = await self._encoder(source)
        payloads = [(str(r[source.key_field]).encode(), encoder.encode(r)) for r in records]
        producer = await self._started()
        sends = [await producer.send(source.topic, value, key=key) for key, value in payloads]
        await asyncio.gather(*sends)
        return len(sends)

    async def _encoder(self, source: Source) -> Encoder:
        key = (source.schema_subject, source.reader_schema)
        if key not in self._encoders:
            if not self._registry_url:
                raise ConfigError("push needs a schema registry: set STREAMFS_SCHEMA_REGISTRY_URL")
            from streamfs.schemas.client import connect

            async with connect(self._registry_url) as registry:
                self._encoders[key] = await Encoder.registered(
                    registry, source.schema_subject, source.reader_schema
                )
        return self._encoders[key]

    async def _started(self) -> Any:
        async with self._lock:
            if self._producer is None:
                if not self._bootstrap:
                    raise ConfigError("push needs Kafka: set STREAMFS_KAFKA_BOOTSTRAP")
                from aiokafka import AIOKafkaProducer

                producer = AIOKafkaProducer(
                    bootstrap_servers=self._bootstrap, acks="all", enable_idempotence=True
                )
                await producer.start()
                self._producer = producer
            return self._producer

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


def registered_source(state: RegistryState, name: str) -> Source:
    """The source ``name`` as registered; :class:`UnknownSourceError` naming the known ones."""
    record = state.current("source", name)
    if record is None:
        known = ", ".join(state.names("source")) or "none"
        raise UnknownSourceError(f"unknown source {name!r} (registered: {known})")
    return source_from_json(record.spec)
