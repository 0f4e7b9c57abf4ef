"""Sources: the Kafka topics of Avro events that features are computed from.

A :class:`Source` names a Kafka topic of Avro events, the reader schema they are
decoded into, which field is the entity key and which is the event time, and how
far event time may stray from the worker's clock (``max_future_skew_ms`` ahead) or
from the stream (``allowed_lateness_ms`` behind the partition's watermark). A Source
checks itself when it is built, so a bad definition fails at declaration with the
source and field named, not at the first event.

Pure Python: nothing here does I/O, so a notebook can import definitions freely.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from streamfs.errors import DefinitionError

# Kafka's rule for topic names (and a safe one for source names, which go into group ids).
_LEGAL_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
_KEY_TYPES: Final = frozenset({"string", "int", "long"})
# Event time is epoch milliseconds: a long, plain or with a millisecond logical type.
_EVENT_TIME_LOGICAL: Final = frozenset({None, "timestamp-millis", "local-timestamp-millis"})


@dataclass(frozen=True, slots=True)
class Source:
    """A topic of Avro events with an entity key and an event time (see the module doc).

    ``reader_schema`` is Avro schema JSON text of a record; ``key_field`` must be a
    string, int or long field, ``event_time_field`` a long holding epoch ms. Either may
    be nullable (a union with ``"null"``): ingestion then rejects events where it is
    null, with reason ``missing_field``.
    """

    name: str
    topic: str
    schema_subject: str
    key_field: str
    event_time_field: str
    allowed_lateness_ms: int
    max_future_skew_ms: int
    reader_schema: str

    def __post_init__(self) -> None:
        _check_name(self.name, "name", self.name)
        _check_name(self.name, "topic", self.topic)
        if not self.schema_subject:
            raise DefinitionError(f"source {self.name!r}: schema_subject is empty")
        for field in ("allowed_lateness_ms", "max_future_skew_ms"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DefinitionError(
                    f"source {self.name!r}: {field} must be a whole number of ms >= 0,"
                    f" got {value!r}"
                )
        fields = record_fields(self.name, self.reader_schema)
        key_type = _field_type(self.name, fields, self.key_field, "key_field")
        if not (isinstance(key_type, str) and key_type in _KEY_TYPES):
            raise DefinitionError(
                f"source {self.name!r}: key_field {self.key_field!r} has type"
                f" {json.dumps(key_type)}; an entity key is a string, int or long"
            )
        time_type = _field_type(self.name, fields, self.event_time_field, "event_time_field")
        logical = time_type.get("logicalType") if isinstance(time_type, dict) else None
        base = time_type.get("type") if isinstance(time_type, dict) else time_type
        if base != "long" or logical not in _EVENT_TIME_LOGICAL:
            raise DefinitionError(
                f"source {self.name!r}: event_time_field {self.event_time_field!r} has type"
                f" {json.dumps(time_type)}; event time is a long of epoch milliseconds"
                " (optionally with logicalType timestamp-millis)"
            )


def record_fields(source: str, reader_schema: str) -> dict[str, Any]:
    """The top-level fields of a record schema, by name (their Avro type JSON)."""
    try:
        schema = json.loads(reader_schema)
    except ValueError as exc:
        raise DefinitionError(f"source {source!r}: reader_schema is not JSON: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise DefinitionError(f"source {source!r}: reader_schema is not an Avro record schema")
    fields = schema.get("fields")
    if not isinstance(fields, list) or not all(
        isinstance(f, dict) and isinstance(f.get("name"), str) and "type" in f for f in fields
    ):
        raise DefinitionError(
            f"source {source!r}: reader_schema fields must be a list of {{name, type}} objects"
        )
    return {f["name"]: f["type"] for f in fields}


def _check_name(source: str, what: str, value: str) -> None:
    if not _LEGAL_NAME.fullmatch(value) or value in {".", ".."}:
        raise DefinitionError(
            f"source {source!r}: {what} {value!r} must be 1-249 characters of"
            " letters, digits, '.', '_' and '-'"
        )


def _field_type(source: str, fields: dict[str, Any], field: str, role: str) -> Any:
    """The field's type with a ``["null", T]`` union unwrapped to ``T``."""
    if field not in fields:
        raise DefinitionError(
            f"source {source!r}: {role} {field!r} is not a field of the reader schema"
            f" (fields: {', '.join(fields)})"
        )
    avro_type = fields[field]
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(branches) != 1:
            raise DefinitionError(
                f"source {source!r}: {role} {field!r} is a union of {json.dumps(avro_type)};"
                " only a single type, optionally with null, is allowed"
            )
        avro_type = branches[0]
    return avro_type
