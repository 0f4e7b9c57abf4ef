"""The Confluent wire format: ``magic 0 | schema id (4 bytes, big-endian) | Avro body``.

Every Confluent serializer (confluent-kafka's ``AvroSerializer``, Java's
``KafkaAvroSerializer``) writes this frame, so streamfs reads and writes exactly it.
Newer Confluent clients can put a schema GUID in a Kafka header or use magic byte 1
instead; those frames are rejected here as ``bad_magic``.
"""

from __future__ import annotations

from streamfs.schemas.errors import EncodeError, Reason, WireFormatError

MAGIC = 0
HEADER_SIZE = 5
# Java reads the id as a signed int; the registries hand out positive ids.
MAX_SCHEMA_ID = 2**31 - 1

_MAGIC_BYTE = bytes([MAGIC])


def header(schema_id: int) -> bytes:
    """The 5 bytes that start every frame of ``schema_id``; also the decoder's lookup key."""
    if not 0 <= schema_id <= MAX_SCHEMA_ID:
        raise EncodeError(f"schema id {schema_id} is outside 0..{MAX_SCHEMA_ID}")
    return _MAGIC_BYTE + schema_id.to_bytes(4, "big")


def frame(schema_id: int, body: bytes | bytearray | memoryview) -> bytes:
    """Prefix an Avro body with the header of ``schema_id``."""
    return header(schema_id) + body


def unframe(data: bytes | bytearray | memoryview) -> tuple[int, memoryview]:
    """Split a frame into its schema id and a zero-copy view of the body.

    Raises :class:`WireFormatError` with reason ``too_short`` or ``bad_magic``.
    """
    view = memoryview(data)
    if len(view) < HEADER_SIZE:
        raise WireFormatError(
            Reason.TOO_SHORT,
            f"frame of {len(view)} bytes is shorter than the {HEADER_SIZE}-byte header",
        )
    if view[0] != MAGIC:
        raise WireFormatError(
            Reason.BAD_MAGIC, f"frame starts with magic byte {view[0]}, expected {MAGIC}"
        )
    return int.from_bytes(view[1:HEADER_SIZE], "big"), view[HEADER_SIZE:]


def check(data: bytes | bytearray | memoryview) -> WireFormatError | None:
    """The wire format error of ``data``, or ``None``; used off the decoder's fast path."""
    try:
        unframe(data)
    except WireFormatError as exc:
        return exc
    return None
