"""Errors of the schemas layer: wire format, registry client, Avro codec.

Two families, because callers act differently on them:

- :class:`DecodeError` (and its :class:`WireFormatError`) is about one event: the
  worker sends that event to the DLQ with ``reason`` in its headers and carries on.
  ``reason`` is one of :class:`Reason`, a stable string the DLQ and its metrics
  key on.
- :class:`SchemaRegistryError` is about the registry: ``error_code`` is Confluent's
  (``40403`` schema not found, ``409`` incompatible, ...). Its subclass
  :class:`RegistryUnavailableError` means "could not ask"; a worker retries
  instead of dead-lettering good events.
"""

from __future__ import annotations

from enum import StrEnum

from streamfs.errors import StreamfsError


class Reason(StrEnum):
    """Why an event could not be decoded; the values are stable (DLQ headers, metrics)."""

    TOO_SHORT = "too_short"  # fewer than the 5 header bytes
    BAD_MAGIC = "bad_magic"  # byte 0 is not the Confluent magic 0
    UNKNOWN_SCHEMA = "unknown_schema"  # the registry has no schema with this id
    TRUNCATED = "truncated"  # the body ends before the writer schema says it does
    UNDECODABLE = "undecodable"  # body bytes that do not follow the writer schema
    MISSING_FIELD = "missing_field"  # a reader field without default is absent in the writer
    INCOMPATIBLE_SCHEMA = "incompatible_schema"  # writer cannot be resolved to the reader


class DecodeError(StreamfsError):
    """One event could not be decoded; ``reason`` says why, ``schema_id`` which writer."""

    def __init__(self, reason: Reason, message: str, *, schema_id: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.schema_id = schema_id

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.reason, str(self)), {"schema_id": self.schema_id})


class WireFormatError(DecodeError):
    """The bytes are not a Confluent wire format frame (reason ``too_short`` or ``bad_magic``)."""


class EncodeError(StreamfsError):
    """A record does not fit the schema it is encoded with; the message names schema and field."""


class UnresolvedSchemaError(StreamfsError):
    """A synchronous decode met writer schema ids it has not fetched yet.

    A programming error, not a bad event: call ``await decoder.resolve(exc.schema_ids)``
    (or use the async ``decode_batch``) and decode again.
    """

    def __init__(self, schema_ids: frozenset[int]) -> None:
        super().__init__(f"writer schema ids not resolved yet: {sorted(schema_ids)}")
        self.schema_ids = schema_ids


class SchemaRegistryError(StreamfsError):
    """The registry answered with an error; ``error_code`` is Confluent's code for it."""

    def __init__(
        self,
        message: str,
        *,
        error_code: int,
        status: int,
        subject: str | None = None,
        schema_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.status = status
        self.subject = subject
        self.schema_id = schema_id


class SubjectNotFoundError(SchemaRegistryError):
    """40401: no such subject."""


class VersionNotFoundError(SchemaRegistryError):
    """40402: the subject has no such version."""


class SchemaNotFoundError(SchemaRegistryError):
    """40403: no schema with this id (or, for a lookup, not under this subject)."""


class IncompatibleSchemaError(SchemaRegistryError):
    """409: the schema breaks the subject's compatibility rule."""


class InvalidSchemaError(SchemaRegistryError):
    """42201: the registry could not parse the schema."""


class RegistryUnavailableError(SchemaRegistryError):
    """The registry could not be reached, timed out, or failed (5xx); try again later."""


ERRORS_BY_CODE: dict[int, type[SchemaRegistryError]] = {
    40401: SubjectNotFoundError,
    40402: VersionNotFoundError,
    40403: SchemaNotFoundError,
    409: IncompatibleSchemaError,
    42201: InvalidSchemaError,
}
