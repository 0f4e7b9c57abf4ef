"""The Avro codec: round trips, schema evolution at runtime, DLQ reasons, Confluent interop.

Pure unit tests: every registry here is the in-memory ``mock://`` one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfs.schemas import wire
from streamfs.schemas.client import AsyncRegistryClient, connect, connect_sync
from streamfs.schemas.codec import Decoder, Encoder, value_subject
from streamfs.schemas.errors import (
    DecodeError,
    EncodeError,
    Reason,
    RegistryUnavailableError,
    UnresolvedSchemaError,
)
from streamfs.schemas.memory import MemoryRegistry
from streamfs.schemas.sample import KINDS, SCHEMA_FILES, ShopEvents, stepping_clock

AVRO_DIR = Path(__file__).resolve().parents[2] / "avro_schemas"
T0_MS = 1_700_000_000_000


def avsc(kind: str) -> str:
    return (AVRO_DIR / SCHEMA_FILES[kind]).read_text()  # type: ignore[index]


PURCHASE_V1 = avsc("purchase")


def purchase_v2() -> str:
    """v2 adds ``channel`` with a default and drops the optional ``coupon``."""
    schema = json.loads(PURCHASE_V1)
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "coupon"]
    schema["fields"].append({"name": "channel", "type": "string", "default": "web"})
    return json.dumps(schema)


PURCHASE_V2 = purchase_v2()


@pytest.fixture
def mock_url() -> str:
    return f"mock://{uuid.uuid4().hex}"


@pytest.fixture
async def registry(mock_url: str) -> AsyncRegistryClient:
    return connect(mock_url)


@pytest.fixture
def shop() -> ShopEvents:
    return ShopEvents(seed=11, entities=500, clock=stepping_clock(T0_MS, 1_000))


def make_purchase(**overrides: Any) -> dict[str, Any]:
    event = {
        "user_id": "u000042",
        "order_id": "o0000000001",
        "amount": 59.9,
        "currency": "EUR",
        "category": "books",
        "created_at": T0_MS,
        "coupon": None,
        "items": 2,
        "payment_method": "card",
    }
    event.update(overrides)
    return event


def decoder_for(registry: AsyncRegistryClient, reader: str = PURCHASE_V1) -> Decoder:
    return Decoder(registry, reader)


# ---------------------------------------------------------------- round trips


async def test_sample_events_of_every_kind_round_trip(
    registry: AsyncRegistryClient, shop: ShopEvents
) -> None:
    for kind in KINDS:
        schema = avsc(kind)
        encoder = await Encoder.registered(registry, value_subject(kind), schema)
        decoder = Decoder(registry, schema)
        events = list(shop.events(kind, 200))
        assert await decoder.decode_batch(encoder.encode_batch(events)) == events


def test_encoded_bytes_are_framed_with_the_registered_id(mock_url: str) -> None:
    encoder = Encoder.registered_sync(connect_sync(mock_url), "purchases-value", PURCHASE_V1)
    schema_id, _ = wire.unframe(encoder.encode(make_purchase()))
    assert schema_id == encoder.schema_id == 1


_text = st.text(max_size=20)
purchases = st.fixed_dictionaries(
    {
        "user_id": _text,
        "order_id": _text,
        "amount": st.floats(allow_nan=False),
        "currency": _text,
        "category": _text,
        "created_at": st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "coupon": st.none() | _text,
        "items": st.integers(min_value=-(2**31), max_value=2**31 - 1),
        "payment_method": _text,
    }
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(purchases, max_size=20), schema_id=st.integers(1, wire.MAX_SCHEMA_ID))
def test_any_purchase_round_trips(
    events: list[dict[str, Any]], schema_id: int, registry: AsyncRegistryClient
) -> None:
    encoder = Encoder(schema_id, PURCHASE_V1)
    decoder = Decoder(registry, PURCHASE_V1)
    decoder.learn(schema_id, PURCHASE_V1)
    assert decoder.decode_batch_sync(encoder.encode_batch(events)) == events


async def test_timestamps_can_decode_as_datetimes(registry: AsyncRegistryClient) -> None:
    encoder = await Encoder.registered(registry, "p-value", PURCHASE_V1)
    decoder = Decoder(registry, PURCHASE_V1, logical_timestamps=True)
    record = await decoder.decode(encoder.encode(make_purchase()))
    assert record["created_at"] == datetime.fromtimestamp(T0_MS / 1000, UTC)


def test_a_record_that_does_not_fit_is_an_encode_error_naming_the_id() -> None:
    encoder = Encoder(3, PURCHASE_V1, subject="purchases-value")
    with pytest.raises(EncodeError, match=r"schema id 3 \(subject 'purchases-value'\)"):
        encoder.encode(make_purchase(amount="a lot"))


# ---------------------------------------------------------------- evolution


def interleave(v1: list[bytes], v2: list[bytes]) -> Iterator[bytes]:
    for a, b in zip(v1, v2, strict=True):
        yield a
        yield b


@pytest.mark.parametrize("reader", ["v1", "v2"])
async def test_v2_appearing_mid_stream_decodes_with_the_same_decoder(
    reader: str, registry: AsyncRegistryClient, mock_url: str
) -> None:
    subject = "purchases-value"
    encoder_v1 = await Encoder.registered(registry, subject, PURCHASE_V1)
    decoder = Decoder(registry, PURCHASE_V1 if reader == "v1" else PURCHASE_V2)

    v1_events = [
        make_purchase(order_id=f"o{i}", coupon="SPRING15" if i % 2 else None) for i in range(6)
    ]
    first = await decoder.decode_batch(encoder_v1.encode_batch(v1_events[:2]))
    assert decoder.known_ids == {encoder_v1.schema_id}

    # A producer deploys v2 while the decoder runs; v2's id shows up in the middle of a batch.
    v2_producer = connect(mock_url)
    encoder_v2 = await Encoder.registered(v2_producer, subject, PURCHASE_V2)
    assert encoder_v2.schema_id != encoder_v1.schema_id
    v2_events = [
        {k: v for k, v in make_purchase(order_id=f"n{i}").items() if k != "coupon"}
        | {"channel": "app"}
        for i in range(4)
    ]
    batch = [
        *encoder_v1.encode_batch(v1_events[2:4]),
        *interleave(encoder_v1.encode_batch(v1_events[4:]), encoder_v2.encode_batch(v2_events[:2])),
        *encoder_v2.encode_batch(v2_events[2:]),
    ]
    second = await decoder.decode_batch(batch)

    if reader == "v2":  # v1 events get v2's default channel; coupon is gone
        as_read = [
            {k: v for k, v in e.items() if k != "coupon"} | {"channel": "web"} for e in v1_events
        ]
        want_v2 = v2_events
    else:  # v2 events get v1's default coupon; channel is dropped
        as_read = v1_events
        want_v2 = [
            {k: v for k, v in e.items() if k != "channel"} | {"coupon": None} for e in v2_events
        ]
    assert first == as_read[:2]
    assert second == [
        *as_read[2:4],
        as_read[4],
        want_v2[0],
        as_read[5],
        want_v2[1],
        *want_v2[2:],
    ]
    assert decoder.known_ids == {encoder_v1.schema_id, encoder_v2.schema_id}


# ---------------------------------------------------------------- DLQ reasons


async def test_bad_events_become_error_values_and_the_rest_decodes(
    registry: AsyncRegistryClient,
) -> None:
    encoder = await Encoder.registered(registry, "p-value", PURCHASE_V1)
    good = encoder.encode(make_purchase())
    with_coupon = encoder.encode(make_purchase(coupon="X"))
    # The first byte that differs is the branch index of the coupon union: make it 4 (of 2).
    coupon_at = next(i for i, (a, b) in enumerate(zip(good, with_coupon, strict=True)) if a != b)
    batch = [
        good,
        b"\x00\x00",
        b"\x01" + good[1:],
        wire.frame(999, good[5:]),
        good[:-3],
        good + b"\x00",
        good[:coupon_at] + b"\x08" + good[coupon_at + 1 :],
        good,
    ]
    results = await decoder_for(registry).decode_batch(batch)
    assert results[0] == results[-1] == make_purchase()
    reasons = [r.reason for r in results[1:-1] if isinstance(r, DecodeError)]
    assert reasons == [
        "too_short",
        "bad_magic",
        "unknown_schema",
        "truncated",
        "undecodable",
        "undecodable",
    ]
    unknown = results[3]
    assert isinstance(unknown, DecodeError)
    assert unknown.schema_id == 999
    assert "999" in str(unknown)


async def test_reader_field_without_default_missing_in_writer_is_missing_field(
    registry: AsyncRegistryClient,
) -> None:
    encoder = await Encoder.registered(registry, "p-value", PURCHASE_V1)
    reader = json.loads(PURCHASE_V1)
    reader["fields"].append({"name": "store_id", "type": "string"})
    (result,) = await Decoder(registry, reader).decode_batch([encoder.encode(make_purchase())])
    assert isinstance(result, DecodeError)
    assert result.reason == Reason.MISSING_FIELD
    assert "store_id" in str(result)
    assert f"schema id {encoder.schema_id}" in str(result)


async def test_a_writer_type_the_reader_cannot_take_is_incompatible_schema(
    registry: AsyncRegistryClient,
) -> None:
    encoder = await Encoder.registered(registry, "p-value", PURCHASE_V1)
    reader = json.loads(PURCHASE_V1)
    reader["fields"][2]["type"] = "boolean"  # amount: double -> boolean
    (result,) = await Decoder(registry, reader).decode_batch([encoder.encode(make_purchase())])
    assert isinstance(result, DecodeError)
    assert result.reason == Reason.INCOMPATIBLE_SCHEMA


async def test_an_unknown_id_is_asked_again_after_the_retry_interval(
    registry: AsyncRegistryClient, mock_url: str
) -> None:
    now_ms = [0]
    decoder = Decoder(registry, PURCHASE_V1, retry_unknown_ms=5_000, clock=lambda: now_ms[0])
    message = wire.frame(1, Encoder(1, PURCHASE_V1).encode(make_purchase())[5:])

    (first,) = await decoder.decode_batch([message])
    assert isinstance(first, DecodeError)
    assert first.reason == Reason.UNKNOWN_SCHEMA

    # The id reaches this registry replica later; until the interval passes we don't ask.
    await connect(mock_url).register("p-value", PURCHASE_V1)
    requests = MemoryRegistry.named(mock_url).requests
    now_ms[0] = 4_999
    (second,) = await decoder.decode_batch([message])
    assert isinstance(second, DecodeError)
    assert MemoryRegistry.named(mock_url).requests == requests
    now_ms[0] = 5_000
    assert await decoder.decode_batch([message]) == [make_purchase()]


async def test_an_unreachable_registry_raises_instead_of_dead_lettering(
    registry: AsyncRegistryClient, mock_url: str
) -> None:
    encoder = Encoder(1, PURCHASE_V1)
    decoder = decoder_for(registry)
    MemoryRegistry.named(mock_url).available = False
    with pytest.raises(RegistryUnavailableError, match="schema id 1"):
        await decoder.decode_batch([encoder.encode(make_purchase())])


async def test_writer_schemas_are_fetched_once(
    registry: AsyncRegistryClient, mock_url: str
) -> None:
    encoder = await Encoder.registered(connect(mock_url), "p-value", PURCHASE_V1)
    decoder = decoder_for(registry)
    messages = encoder.encode_batch([make_purchase()] * 10)
    store = MemoryRegistry.named(mock_url)
    before = store.requests
    for _ in range(3):
        await decoder.decode_batch(messages)
    assert store.requests == before + 1


async def test_sync_decoding_needs_resolved_ids(registry: AsyncRegistryClient) -> None:
    encoder = await Encoder.registered(registry, "p-value", PURCHASE_V1)
    decoder = decoder_for(registry)
    messages = [encoder.encode(make_purchase())]
    with pytest.raises(UnresolvedSchemaError) as caught:
        decoder.decode_batch_sync(messages)
    await decoder.resolve(caught.value.schema_ids)
    assert decoder.decode_batch_sync(messages) == [make_purchase()]


async def test_a_non_avro_writer_is_incompatible_schema(registry: AsyncRegistryClient) -> None:
    decoder = decoder_for(registry)
    decoder.learn(5, 'syntax = "proto3"; message Purchase {}')
    (result,) = decoder.decode_batch_sync([wire.frame(5, b"\x00")])
    assert isinstance(result, DecodeError)
    assert result.reason == Reason.INCOMPATIBLE_SCHEMA


# ---------------------------------------------------------------- Confluent interop


@pytest.fixture
def confluent() -> Any:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


def confluent_ctx(topic: str) -> Any:
    from confluent_kafka.serialization import MessageField, SerializationContext

    return SerializationContext(topic, MessageField.VALUE)


def as_confluent_reads(event: dict[str, Any]) -> dict[str, Any]:
    """Confluent's deserializer returns timestamp-millis as an aware datetime."""
    out = dict(event)
    out["created_at"] = datetime.fromtimestamp(event["created_at"] / 1000, UTC)
    return out


async def test_confluent_avro_serializer_output_decodes_with_streamfs(
    confluent: Any, registry: AsyncRegistryClient, shop: ShopEvents
) -> None:
    from confluent_kafka.schema_registry.avro import AvroSerializer

    serialize: Callable[..., bytes] = AvroSerializer(confluent, PURCHASE_V1)
    events = list(shop.events("purchase", 50))
    messages = [serialize(e, confluent_ctx("purchases")) for e in events]
    # Mirror the id Confluent's registry handed out into ours.
    confluent_id, _ = wire.unframe(messages[0])
    assert await registry.register("purchases-value", PURCHASE_V1) == confluent_id
    assert await decoder_for(registry).decode_batch(messages) == events


async def test_streamfs_output_decodes_with_confluent_avro_deserializer(
    confluent: Any, registry: AsyncRegistryClient, shop: ShopEvents
) -> None:
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.avro import AvroDeserializer

    confluent_id = confluent.register_schema("purchases-value", Schema(PURCHASE_V1, "AVRO"))
    encoder = await Encoder.registered(registry, "purchases-value", PURCHASE_V1)
    assert encoder.schema_id == confluent_id
    deserialize = AvroDeserializer(confluent)
    events = list(shop.events("purchase", 50))
    decoded = [deserialize(m, confluent_ctx("purchases")) for m in encoder.encode_batch(events)]
    assert decoded == [as_confluent_reads(e) for e in events]


async def test_confluent_v1_and_streamfs_v2_events_share_a_decoder(
    confluent: Any, registry: AsyncRegistryClient
) -> None:
    from confluent_kafka.schema_registry.avro import AvroSerializer

    serialize = AvroSerializer(confluent, PURCHASE_V1)
    from_confluent = serialize(make_purchase(), confluent_ctx("purchases"))
    assert await registry.register("purchases-value", PURCHASE_V1) == 1
    v2 = await Encoder.registered(registry, "purchases-value", PURCHASE_V2)
    from_streamfs = v2.encode(
        {k: v for k, v in make_purchase().items() if k != "coupon"} | {"channel": "app"}
    )
    got = await Decoder(registry, PURCHASE_V2).decode_batch([from_confluent, from_streamfs])
    base = {k: v for k, v in make_purchase().items() if k != "coupon"}
    assert got == [base | {"channel": "web"}, base | {"channel": "app"}]
