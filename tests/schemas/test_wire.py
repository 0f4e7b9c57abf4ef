"""The Confluent wire format: frame layout, round trip, and the stable error reasons."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamfs.errors import StreamfsError
from streamfs.schemas import wire
from streamfs.schemas.errors import DecodeError, EncodeError, Reason, WireFormatError

schema_ids = st.integers(min_value=0, max_value=wire.MAX_SCHEMA_ID)


def test_frame_layout_is_magic_then_big_endian_id_then_body() -> None:
    assert wire.frame(1, b"\x02\x04") == b"\x00\x00\x00\x00\x01\x02\x04"
    assert wire.frame(0x01020304, b"") == b"\x00\x01\x02\x03\x04"


@given(schema_id=schema_ids, body=st.binary(max_size=256))
def test_unframe_inverts_frame(schema_id: int, body: bytes) -> None:
    got_id, got_body = wire.unframe(wire.frame(schema_id, body))
    assert got_id == schema_id
    assert bytes(got_body) == body


@given(schema_id=schema_ids, body=st.binary(max_size=64))
def test_unframe_accepts_every_buffer_type(schema_id: int, body: bytes) -> None:
    framed = wire.frame(schema_id, body)
    for data in (framed, bytearray(framed), memoryview(framed)):
        got_id, got_body = wire.unframe(data)
        assert (got_id, bytes(got_body)) == (schema_id, body)


def test_unframe_body_is_a_view_not_a_copy() -> None:
    data = bytearray(wire.frame(7, b"abc"))
    _, body = wire.unframe(data)
    data[5] = ord("z")
    assert bytes(body) == b"zbc"


@given(data=st.binary(max_size=wire.HEADER_SIZE - 1))
def test_shorter_than_the_header_is_too_short(data: bytes) -> None:
    with pytest.raises(WireFormatError) as caught:
        wire.unframe(data)
    assert caught.value.reason is Reason.TOO_SHORT
    assert str(caught.value.reason) == "too_short"  # the stable DLQ string
    assert f"{len(data)} bytes" in str(caught.value)


@given(magic=st.integers(min_value=1, max_value=255), rest=st.binary(min_size=4, max_size=32))
def test_any_other_magic_byte_is_bad_magic(magic: int, rest: bytes) -> None:
    with pytest.raises(WireFormatError) as caught:
        wire.unframe(bytes([magic]) + rest)
    assert caught.value.reason is Reason.BAD_MAGIC
    assert str(caught.value.reason) == "bad_magic"
    assert f"magic byte {magic}" in str(caught.value)


def test_wire_errors_are_decode_errors_under_the_root() -> None:
    error = wire.check(b"\x01\x00\x00\x00\x01")
    assert isinstance(error, WireFormatError)
    assert isinstance(error, DecodeError)
    assert isinstance(error, StreamfsError)
    assert wire.check(b"\x00\x00\x00\x00\x01") is None


def test_decode_errors_survive_pickling_with_their_reason() -> None:
    error = DecodeError(Reason.UNKNOWN_SCHEMA, "schema id 9 is not in the registry", schema_id=9)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.schema_id, str(copy)) == (error.reason, 9, str(error))


@pytest.mark.parametrize("schema_id", [-1, wire.MAX_SCHEMA_ID + 1])
def test_frame_rejects_ids_outside_the_java_int_range(schema_id: int) -> None:
    with pytest.raises(EncodeError, match=str(schema_id)):
        wire.frame(schema_id, b"")
