"""Byte encoding of aggregate states: tagged scalars and numbers, little-endian, no schema.

Aggregate states go to RocksDB (Faust tables) and Redis many times per second, so
they are encoded by hand with :mod:`struct`, not pickled (unsafe, version-bound)
or JSON'd (floats lose their exact bits, ints their type). Every encoded state
starts with :data:`VERSION`; a reader meeting another version refuses it rather
than guessing.

A scalar is one tag byte then its payload:

====  ==========================================
tag   payload
====  ==========================================
N     none (no value)
T/F   none (booleans ``True`` / ``False``)
i     int64, 8 bytes
I     larger int: uint16 length, signed big-endian two's complement
f     float64, 8 bytes (exact bits, NaN and infinities kept)
s     str: uint32 length, UTF-8
====  ==========================================
"""

from __future__ import annotations

import struct
from typing import Final

from streamfs.errors import StreamfsError

VERSION: Final = 1
VERSION_BYTE: Final = bytes([VERSION])

Scalar = bool | int | float | str
"""A value an aggregation reads from an event field (Avro primitives but bytes)."""

_I64: Final = struct.Struct("<q")
_U64: Final = struct.Struct("<Q")
_F64: Final = struct.Struct("<d")
_U32: Final = struct.Struct("<I")
_U16: Final = struct.Struct("<H")
# The tags of encode_scalar, as the ints decode_scalar reads.
_TAG_NONE: Final = ord("N")
_TAG_TRUE: Final = ord("T")
_TAG_FALSE: Final = ord("F")
_TAG_INT: Final = ord("i")
_TAG_FLOAT: Final = ord("f")
_TAG_BIG_INT: Final = ord("I")
_TAG_STR: Final = ord("s")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


class StateDecodeError(StreamfsError, ValueError):
    """Stored aggregate state bytes are malformed or of an unknown version."""


def encode_scalar(value: Scalar | None) -> bytes:
    """One tagged scalar (see the module table)."""
    if value is None:
        return b"N"
    if value is True:
        return b"T"
    if value is False:
        return b"F"
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return b"i" + _I64.pack(value)
        body = value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)
        return b"I" + _U16.pack(len(body)) + body
    if isinstance(value, float):
        return b"f" + _F64.pack(value)
    if isinstance(value, str):
        body = value.encode()
        return b"s" + _U32.pack(len(body)) + body
    raise TypeError(f"cannot encode a {type(value).__name__} aggregate value: {value!r}")


# Whole versioned states in one ``pack`` (the aggregators' hot encodings; same bytes as
# ``VERSION_BYTE`` followed by the pieces above).
_V_U64: Final = struct.Struct("<BQ")
_V_INT: Final = struct.Struct("<Bcq")
_V_FLOAT: Final = struct.Struct("<Bcd")
_V_U64_INT: Final = struct.Struct("<BQcq")
_V_U64_FLOAT: Final = struct.Struct("<BQcd")
_V_U64_F64_F64: Final = struct.Struct("<BQdd")


def encode_versioned_u64(value: int) -> bytes:
    """``VERSION_BYTE + encode_u64(value)``."""
    return _V_U64.pack(VERSION, value)


def encode_versioned_number(value: int | float) -> bytes:
    """``VERSION_BYTE + encode_number(value)``."""
    if type(value) is float:
        return _V_FLOAT.pack(VERSION, b"f", value)
    if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
        return _V_INT.pack(VERSION, b"i", value)
    return VERSION_BYTE + encode_number(value)


def encode_versioned_count_number(count: int, value: int | float) -> bytes:
    """``VERSION_BYTE + encode_u64(count) + encode_number(value)``."""
    if type(value) is float:
        return _V_U64_FLOAT.pack(VERSION, count, b"f", value)
    if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
        return _V_U64_INT.pack(VERSION, count, b"i", value)
    return VERSION_BYTE + encode_u64(count) + encode_number(value)


def encode_versioned_u64_f64_f64(count: int, a: float, b: float) -> bytes:
    """``VERSION_BYTE + encode_u64(count) + encode_f64(a) + encode_f64(b)``."""
    return _V_U64_F64_F64.pack(VERSION, count, a, b)


def frame(body: bytes) -> bytes:
    """``body`` after its uint32 length (how a tile row holds each state)."""
    return _U32.pack(len(body)) + body


# Their inverses for the shapes those encodings produce (int64 or float numbers): one
# ``unpack`` each. ``None`` for any other bytes, which the caller decodes piece by piece
# (that path also names what is wrong). They compare tags as the ints defined above.


def unpack_versioned_u64(data: bytes) -> int | None:
    if len(data) == 9 and data[0] == VERSION:
        value: int = _V_U64.unpack(data)[1]
        return value
    return None


def unpack_versioned_number(data: bytes) -> int | float | None:
    if len(data) == 10 and data[0] == VERSION:
        tag = data[1]
        if tag in (_TAG_FLOAT, _TAG_INT):
            value: int | float = (_V_FLOAT if tag == _TAG_FLOAT else _V_INT).unpack(data)[2]
            return value
    return None


def unpack_versioned_count_number(data: bytes) -> tuple[int, int | float] | None:
    if len(data) == 18 and data[0] == VERSION:
        tag = data[9]
        if tag in (_TAG_FLOAT, _TAG_INT):
            _, count, _, value = (_V_U64_FLOAT if tag == _TAG_FLOAT else _V_U64_INT).unpack(data)
            return count, value
    return None


def unpack_versioned_u64_f64_f64(data: bytes) -> tuple[int, float, float] | None:
    if len(data) == 25 and data[0] == VERSION:
        _, count, a, b = _V_U64_F64_F64.unpack(data)
        return count, a, b
    return None


def decode_scalar(data: bytes, offset: int) -> tuple[Scalar | None, int]:
    """The scalar at ``offset`` and the offset just after it."""
    if offset >= len(data):
        raise StateDecodeError(f"unknown scalar tag b'' at byte {offset}")
    # The tag as an int, compared with ints: a compiled build makes no bytes object for it.
    tag = data[offset]
    offset += 1
    try:
        if tag == _TAG_STR:
            (size,) = _U32.unpack_from(data, offset)
            end = offset + 4 + size
            _check_end(data, end)
            return data[offset + 4 : end].decode(), end
        if tag == _TAG_INT:
            return _I64.unpack_from(data, offset)[0], offset + 8
        if tag == _TAG_FLOAT:
            return _F64.unpack_from(data, offset)[0], offset + 8
        if tag == _TAG_NONE:
            return None, offset
        if tag == _TAG_TRUE:
            return True, offset
        if tag == _TAG_FALSE:
            return False, offset
        if tag == _TAG_BIG_INT:
            (size,) = _U16.unpack_from(data, offset)
            end = offset + 2 + size
            _check_end(data, end)
            return int.from_bytes(data[offset + 2 : end], "big", signed=True), end
    except (struct.error, UnicodeDecodeError) as exc:
        raise StateDecodeError(f"truncated or malformed scalar at byte {offset - 1}") from exc
    raise StateDecodeError(f"unknown scalar tag {bytes([tag])!r} at byte {offset - 1}")


def encode_u64(value: int) -> bytes:
    return _U64.pack(value)


def decode_u64(data: bytes, offset: int) -> tuple[int, int]:
    try:
        return _U64.unpack_from(data, offset)[0], offset + 8
    except struct.error as exc:
        raise StateDecodeError(f"truncated state: no count at byte {offset}") from exc


def encode_u32(value: int) -> bytes:
    return _U32.pack(value)


def decode_u32(data: bytes, offset: int) -> tuple[int, int]:
    try:
        return _U32.unpack_from(data, offset)[0], offset + 4
    except struct.error as exc:
        raise StateDecodeError(f"truncated state: no length at byte {offset}") from exc


def encode_i64(value: int) -> bytes:
    return _I64.pack(value)


def decode_i64(data: bytes, offset: int) -> tuple[int, int]:
    try:
        return _I64.unpack_from(data, offset)[0], offset + 8
    except struct.error as exc:
        raise StateDecodeError(f"truncated state: no int64 at byte {offset}") from exc


def encode_f64(value: float) -> bytes:
    return _F64.pack(value)


def decode_f64(data: bytes, offset: int) -> tuple[float, int]:
    try:
        return _F64.unpack_from(data, offset)[0], offset + 8
    except struct.error as exc:
        raise StateDecodeError(f"truncated state: no float64 at byte {offset}") from exc


def encode_number(value: int | float) -> bytes:
    """A sum or total: an int stays an int (exact), a float keeps its bits."""
    return encode_scalar(value)


def decode_number(data: bytes, offset: int) -> tuple[int | float, int]:
    value, offset = decode_scalar(data, offset)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StateDecodeError(f"expected a number before byte {offset}, got {value!r}")
    return value, offset


def check_version(data: bytes, what: str) -> int:
    """Validate the leading version byte of an encoded ``what`` state; the body's offset."""
    if not data:
        raise StateDecodeError(f"empty {what} state")
    if data[0] != VERSION:
        raise StateDecodeError(f"{what} state has version {data[0]}, this reader knows {VERSION}")
    return 1


def check_done(data: bytes, offset: int, what: str) -> None:
    """Refuse trailing bytes: they mean the bytes belong to something else."""
    if offset != len(data):
        raise StateDecodeError(f"{len(data) - offset} trailing bytes after the {what} state")


def _check_end(data: bytes, end: int) -> None:
    if end > len(data):
        raise StateDecodeError(f"truncated state: needs {end} bytes, has {len(data)}")
