"""Avro schema text: validation and the canonical form that decides schema identity.

Two texts are the same schema when their Avro Parsing Canonical Form is equal, so
whitespace, key order, ``doc`` and other attributes that do not change the binary
encoding map to one id. The text a client first sent is what the registry keeps
and returns; the canonical form is only the key.

Note the canonical form drops field defaults: two schemas that differ only in a
default share an id. For a writer schema that is sound (defaults are read from
the reader's schema, never the writer's).
"""

from __future__ import annotations

import dataclasses
import functools
import json

import avro.errors
import avro.schema
import fastavro.schema

from streamfs.schemas.registry.errors import InvalidSchema

AVRO = "AVRO"
SCHEMA_TYPES = (AVRO,)


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedSchema:
    text: str
    canonical: str


def parse(text: str) -> ParsedSchema:
    """Validate ``text`` as an Avro schema; raise :class:`InvalidSchema` saying why not."""
    try:
        canonical = _canonical(text)
        avro_schema(text)
    except InvalidSchema:
        raise
    except Exception as exc:  # fastavro and avro raise many unrelated types for bad input
        raise InvalidSchema(f"Invalid schema {text!r}: {exc}") from exc
    return ParsedSchema(text=text, canonical=canonical)


@functools.lru_cache(maxsize=4096)
def _canonical(text: str) -> str:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise InvalidSchema(f"Invalid schema {text!r}: not JSON ({exc})") from exc
    parsed = fastavro.schema.parse_schema(document)
    return str(fastavro.schema.to_parsing_canonical_form(parsed))


@functools.lru_cache(maxsize=4096)
def avro_schema(text: str) -> avro.schema.Schema:
    """The Apache ``avro`` form of ``text``, which the compatibility checker takes (cached)."""
    try:
        return avro.schema.parse(text)
    except (avro.errors.AvroException, ValueError) as exc:
        raise InvalidSchema(f"Invalid schema {text!r}: {exc}") from exc
