"""Avro events in the Confluent wire format: :class:`Encoder` and the batch :class:`Decoder`.

Decoding resolves each event's writer schema (found by the id in its header) against
the source's reader schema, so compatible evolution (a field added with a default,
an optional field dropped) keeps decoding with no restart: a new writer id is
fetched from the registry the first time it is seen.

The decoder is built for the worker's hot path. Its table maps the 5 header bytes
of every writer id already seen to a compiled (writer, reader) pair, so an event
costs one dict lookup plus fastavro's ``schemaless_reader``; no awaits, no schema
parsing, no registry. Everything else (bad frames, new ids, failed ids) leaves that
loop for a slow path, and the only await is the fetch of ids never seen before.

Timestamps (``timestamp-millis`` / ``-micros``) decode as the integers on the wire,
epoch ms or us, which is what the window math and the sinks use; converting to
``datetime`` and back would cost about a microsecond per field. Pass
``logical_timestamps=True`` for fastavro's ``datetime`` objects instead.

Neither class is thread-safe; use one per thread or task group.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from streamfs.schemas import wire
from streamfs.schemas.client import SchemaRegistry, SyncSchemaRegistry
from streamfs.schemas.errors import (
    DecodeError,
    EncodeError,
    Reason,
    SchemaNotFoundError,
    UnresolvedSchemaError,
)

Record = dict[str, Any]
DecodeResult = Record | DecodeError  # errors are values: the second stream, bound for the DLQ
Schema = str | Mapping[str, Any]

_TIMESTAMPS = frozenset(
    {"timestamp-millis", "timestamp-micros", "local-timestamp-millis", "local-timestamp-micros"}
)


def value_subject(topic: str) -> str:
    """The subject of a topic's values under Confluent's default TopicNameStrategy."""
    return f"{topic}-value"


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _as_json(schema: Schema) -> Any:
    """Plain JSON values (a copy), whether given as text or as a mapping."""
    return json.loads(schema if isinstance(schema, str) else json.dumps(schema))


def _without_timestamps(node: Any) -> Any:
    """A copy of a schema's JSON with timestamp logical types turned into plain longs."""
    if isinstance(node, list):
        return [_without_timestamps(item) for item in node]
    if isinstance(node, dict):
        return {
            key: _without_timestamps(value)
            for key, value in node.items()
            if not (key == "logicalType" and value in _TIMESTAMPS)
        }
    return node


@functools.lru_cache(maxsize=512)
def _parse_text(text: str, logical_timestamps: bool) -> Any:
    """A registry schema parsed once per process, shared by every decoder (read-only)."""
    return _parse_json(json.loads(text), logical_timestamps)


def _parse_json(schema: Any, logical_timestamps: bool) -> Any:
    return parse_schema(schema if logical_timestamps else _without_timestamps(schema))


def _canonical(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def missing_fields(writer: Any, reader: Any) -> list[str]:
    """Top-level reader fields that have no default and no writer field (by name or alias)."""
    if not (isinstance(writer, dict) and isinstance(reader, dict)):
        return []
    if writer.get("type") != "record" or reader.get("type") != "record":
        return []
    written = {field["name"] for field in writer.get("fields", [])}
    return [
        field["name"]
        for field in reader.get("fields", [])
        if "default" not in field
        and field["name"] not in written
        and not written.intersection(field.get("aliases", ()))
    ]


class Encoder:
    """Records -> framed Avro bytes for one registered schema."""

    def __init__(self, schema_id: int, schema: Schema, *, subject: str | None = None) -> None:
        self.schema_id = schema_id
        self.subject = subject
        self._schema = parse_schema(_as_json(schema))
        self._header = wire.header(schema_id)
        self._buffer = BytesIO()

    @classmethod
    async def registered(cls, registry: SchemaRegistry, subject: str, schema: str) -> Encoder:
        """Register ``schema`` under ``subject`` (idempotent) and encode with its id."""
        return cls(await registry.register(subject, schema), schema, subject=subject)

    @classmethod
    def registered_sync(cls, registry: SyncSchemaRegistry, subject: str, schema: str) -> Encoder:
        return cls(registry.register(subject, schema), schema, subject=subject)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        buffer = self._buffer
        buffer.seek(0)
        buffer.truncate()
        buffer.write(self._header)
        try:
            schemaless_writer(buffer, self._schema, record)
        except Exception as exc:  # fastavro signals a misfit with many exception types
            raise EncodeError(
                f"record does not fit schema id {self.schema_id}"
                f" (subject {self.subject!r}): {exc!r}"
            ) from exc
        return buffer.getvalue()

    def encode_batch(self, records: Iterable[Mapping[str, Any]]) -> list[bytes]:
        encode = self.encode
        return [encode(record) for record in records]


@dataclass(frozen=True, slots=True)
class _Pair:
    """A writer schema compiled against the decoder's reader (``None`` when they are equal)."""

    schema_id: int
    writer: Any
    reader: Any


class Decoder:
    """Framed Avro bytes -> records in the reader schema, a batch at a time.

    ``reader_schema`` is the source's schema (``None``: decode as written).
    An id the registry does not know decodes to ``unknown_schema`` and is asked
    again after ``retry_unknown_ms`` (a registry replica may lag behind the one
    the producer registered with). A registry that cannot be reached raises
    :class:`~streamfs.schemas.errors.RegistryUnavailableError`: the events are fine,
    the worker should retry rather than dead-letter them.
    """

    def __init__(
        self,
        registry: SchemaRegistry,
        reader_schema: Schema | None,
        *,
        logical_timestamps: bool = False,
        retry_unknown_ms: int = 10_000,
        clock: Callable[[], int] = monotonic_ms,
    ) -> None:
        self._registry = registry
        self._logical_timestamps = logical_timestamps
        self._reader_json = None if reader_schema is None else _as_json(reader_schema)
        self._reader = (
            None
            if self._reader_json is None
            else _parse_json(self._reader_json, logical_timestamps)
        )
        self._reader_canonical = None if self._reader is None else _canonical(self._reader)
        self._retry_unknown_ms = retry_unknown_ms
        self._clock = clock
        self._table: dict[bytes, _Pair] = {}  # header bytes -> pair: the hot path's only lookup
        self._failed: dict[int, tuple[Reason, str]] = {}  # ids whose writer cannot serve the reader
        self._unknown_until_ms: dict[int, int] = {}  # ids the registry did not know, until when

    @property
    def known_ids(self) -> frozenset[int]:
        return frozenset(pair.schema_id for pair in self._table.values())

    def learn(self, schema_id: int, writer_schema: str) -> None:
        """Compile ``writer_schema`` as the writer of ``schema_id``; ``resolve`` calls this."""
        self._unknown_until_ms.pop(schema_id, None)
        try:
            writer_json = json.loads(writer_schema)
            writer = _parse_text(writer_schema, self._logical_timestamps)
        except Exception as exc:  # not JSON, not Avro (a Protobuf id), or invalid Avro
            self._fail(schema_id, Reason.INCOMPATIBLE_SCHEMA, f"is not an Avro schema: {exc!r}")
            return
        missing = missing_fields(writer_json, self._reader_json)
        if missing:
            self._fail(
                schema_id, Reason.MISSING_FIELD, f"lacks reader fields without default: {missing}"
            )
            return
        same = self._reader is None or _canonical(writer) == self._reader_canonical
        pair = _Pair(schema_id, writer, None if same else self._reader)
        self._table[wire.header(schema_id)] = pair

    async def resolve(self, schema_ids: Iterable[int]) -> None:
        """Fetch and compile writer schemas (the slow path; the client caches by id)."""
        ids = sorted(set(schema_ids))
        answers = await asyncio.gather(
            *(self._registry.get_schema(i) for i in ids), return_exceptions=True
        )
        for schema_id, answer in zip(ids, answers, strict=True):
            if isinstance(answer, SchemaNotFoundError):
                self._unknown_until_ms[schema_id] = self._clock() + self._retry_unknown_ms
            elif isinstance(answer, BaseException):
                raise answer
            else:
                self.learn(schema_id, answer)

    async def decode_batch(self, messages: Sequence[bytes]) -> list[DecodeResult]:
        """Decode every message, fetching writer schemas never seen before; order is kept."""
        results, pending = self._decode(messages)
        if pending:
            await self.resolve(self._schema_id(messages[i]) for i in pending)
            again, still = self._decode([messages[i] for i in pending])
            if still:  # unreachable: resolve() leaves every id known, unknown or failed
                raise UnresolvedSchemaError(frozenset(self._schema_id(messages[i]) for i in still))
            for index, result in zip(pending, again, strict=True):
                results[index] = result
        return results

    def decode_batch_sync(self, messages: Sequence[bytes]) -> list[DecodeResult]:
        """Decode without awaiting; raises UnresolvedSchemaError if an id was never resolved."""
        results, pending = self._decode(messages)
        if pending:
            raise UnresolvedSchemaError(frozenset(self._schema_id(messages[i]) for i in pending))
        return results

    async def decode(self, message: bytes) -> Record:
        """One message; raises the :class:`DecodeError` that the batch API returns as a value."""
        (result,) = await self.decode_batch([message])
        if isinstance(result, DecodeError):
            raise result
        return result

    def _decode(self, messages: Sequence[bytes]) -> tuple[list[DecodeResult], list[int]]:
        """The hot loop. Returns the results and the indices still waiting for their schema."""
        table = self._table
        read = _read_record
        results: list[DecodeResult] = []
        append = results.append
        pending: list[int] = []
        for index, data in enumerate(messages):
            pair = table.get(data[:5])
            if pair is None:
                failure = self._off_table(data)
                if failure is None:
                    pending.append(index)
                    failure = _PLACEHOLDER
                append(failure)
                continue
            buffer = BytesIO(data)
            buffer.seek(5)
            try:
                record = read(buffer, pair.writer, pair.reader)
            except Exception as exc:  # fastavro raises builtins for bad bytes; sorted out below
                append(_read_error(pair.schema_id, exc))
                continue
            if buffer.tell() != len(data):
                append(
                    DecodeError(
                        Reason.UNDECODABLE,
                        f"schema id {pair.schema_id}: {len(data) - buffer.tell()} bytes"
                        " left after the record",
                        schema_id=pair.schema_id,
                    )
                )
                continue
            append(record)
        return results, pending

    def _off_table(self, data: bytes) -> DecodeError | None:
        """Why a message missed the table, or ``None`` when its id just needs fetching."""
        if (wire_error := wire.check(data)) is not None:
            return wire_error
        schema_id = self._schema_id(data)
        if (failed := self._failed.get(schema_id)) is not None:
            return DecodeError(*failed, schema_id=schema_id)
        until_ms = self._unknown_until_ms.get(schema_id)
        if until_ms is not None and self._clock() < until_ms:
            return DecodeError(
                Reason.UNKNOWN_SCHEMA,
                f"schema id {schema_id} is not in the registry",
                schema_id=schema_id,
            )
        return None

    @staticmethod
    def _schema_id(data: bytes) -> int:
        return int.from_bytes(data[1:5], "big")

    def _fail(self, schema_id: int, reason: Reason, message: str) -> None:
        self._failed[schema_id] = (reason, f"writer schema id {schema_id} {message}")


# fastavro types its result as any Avro value; a record schema reads as a dict.
_read_record = cast("Callable[[BytesIO, Any, Any], Record]", schemaless_reader)
_PLACEHOLDER = DecodeError(Reason.UNKNOWN_SCHEMA, "placeholder for an id being fetched")


def _read_error(schema_id: int, exc: Exception) -> DecodeError:
    if isinstance(exc, EOFError):
        reason = Reason.TRUNCATED
    elif isinstance(exc, SchemaResolutionError):
        reason = (
            Reason.MISSING_FIELD if "No default value" in str(exc) else Reason.INCOMPATIBLE_SCHEMA
        )
    else:
        reason = Reason.UNDECODABLE
    error = DecodeError(reason, f"schema id {schema_id}: {exc!r}", schema_id=schema_id)
    error.__cause__ = exc
    return error
