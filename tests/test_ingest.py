"""Validation at ingestion, the Source definition and the dead-letter record: pure tests.

Registries are the in-memory ``mock://`` one; the clock is a fixed reading.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from streamfs import dlq
from streamfs.consumer import IngestBatches
from streamfs.definitions import Source
from streamfs.errors import DefinitionError
from streamfs.ingest import (
    Event,
    ForeignTopicError,
    IngestReason,
    Message,
    Reject,
    Validator,
)
from streamfs.metrics import IngestMetrics
from streamfs.names import dlq_topic
from streamfs.schemas import wire
from streamfs.schemas.client import AsyncRegistryClient, connect
from streamfs.schemas.codec import Decoder, Encoder
from streamfs.schemas.errors import Reason

AVRO_DIR = Path(__file__).resolve().parents[1] / "avro_schemas"
PURCHASE = (AVRO_DIR / "purchase.avsc").read_text()
NOW_MS = 1_700_000_000_000
LATENESS_MS = 60_000
SKEW_MS = 5_000
TOPIC = "purchases"


def schema_with(change: dict[str, Any] | None = None, drop: str | None = None) -> str:
    """The purchase schema with fields replaced (by name) or dropped."""
    schema = json.loads(PURCHASE)
    fields = [f for f in schema["fields"] if f["name"] != drop]
    for field in fields:
        if change and field["name"] in change:
            field.update(change[field["name"]])
    schema["fields"] = fields
    return json.dumps(schema)


def make_source(reader_schema: str = PURCHASE, **overrides: Any) -> Source:
    fields: dict[str, Any] = {
        "name": "purchases",
        "topic": TOPIC,
        "schema_subject": f"{TOPIC}-value",
        "key_field": "user_id",
        "event_time_field": "created_at",
        "allowed_lateness_ms": LATENESS_MS,
        "max_future_skew_ms": SKEW_MS,
        "reader_schema": reader_schema,
    }
    return Source(**(fields | overrides))


def make_purchase(**overrides: Any) -> dict[str, Any]:
    return {
        "user_id": "u000042",
        "order_id": "o1",
        "amount": 59.9,
        "currency": "EUR",
        "category": "books",
        "created_at": NOW_MS,
        "coupon": None,
        "items": 2,
        "payment_method": "card",
    } | overrides


def make_message(value: bytes | None, partition: int = 0, offset: int = 0) -> Message:
    return Message(TOPIC, partition, offset, b"u000042", value, (("trace", b"abc"),), NOW_MS)


@pytest.fixture
async def registry() -> AsyncRegistryClient:
    return connect(f"mock://{uuid.uuid4().hex}")


async def encoder(registry: AsyncRegistryClient, schema: str = PURCHASE) -> Encoder:
    return await Encoder.registered(registry, f"{TOPIC}-value", schema)


def validator(registry: AsyncRegistryClient, source: Source | None = None) -> Validator:
    source = source or make_source()
    return Validator(source, Decoder(registry, source.reader_schema), clock=lambda: NOW_MS)


# --- every reject reason --------------------------------------------------------------------


async def test_each_bad_message_is_rejected_with_its_reason_and_good_ones_pass(
    registry: AsyncRegistryClient,
) -> None:
    good = (await encoder(registry)).encode(make_purchase())
    no_user = (await encoder(registry, schema_with(drop="user_id"))).encode(
        {k: v for k, v in make_purchase().items() if k != "user_id"}
    )
    text_amount = (await encoder(registry, schema_with({"amount": {"type": "string"}}))).encode(
        make_purchase(amount="lots")
    )
    cases: list[tuple[bytes | None, str | None]] = [
        (good, None),
        (b"\x00\x01", Reason.TOO_SHORT),
        (None, Reason.TOO_SHORT),
        (b"\x01" + good[1:], Reason.BAD_MAGIC),
        (wire.frame(9_999, good[5:]), Reason.UNKNOWN_SCHEMA),
        (good[:20], Reason.TRUNCATED),
        (good[:5] + b"\xff" * 30, Reason.UNDECODABLE),
        (no_user, Reason.MISSING_FIELD),
        (text_amount, Reason.INCOMPATIBLE_SCHEMA),
        (good, None),
    ]
    messages = [make_message(value, offset=i) for i, (value, _) in enumerate(cases)]

    validated = await validator(registry).validate(messages, {})

    assert [e.offset for e in validated.events] == [0, 9]
    assert [(r.message.offset, r.reason) for r in validated.rejects] == [
        (i, reason) for i, (_, reason) in enumerate(cases) if reason is not None
    ]
    assert all(r.detail for r in validated.rejects)
    tombstone = next(r for r in validated.rejects if r.message.value is None)
    assert "tombstone" in tombstone.detail
    event = validated.events[0]
    assert (event.entity_key, event.event_time_ms, event.partition) == ("u000042", NOW_MS, 0)
    assert event.record == make_purchase()


@pytest.mark.parametrize("null_field", ["user_id", "created_at"])
async def test_a_null_entity_key_or_event_time_is_a_missing_field(
    registry: AsyncRegistryClient, null_field: str
) -> None:
    nullable = schema_with(
        {
            "user_id": {"type": ["null", "string"], "default": None},
            "created_at": {"type": ["null", "long"], "default": None},
        }
    )
    source = make_source(nullable)
    enc = await encoder(registry, nullable)
    messages = [make_message(enc.encode(make_purchase(**{null_field: None})))]

    validated = await validator(registry, source).validate(messages, {})

    assert validated.events == []
    (reject,) = validated.rejects
    assert reject.reason == Reason.MISSING_FIELD
    assert null_field in reject.detail


async def test_future_is_judged_against_the_clock_with_the_skew_inclusive(
    registry: AsyncRegistryClient,
) -> None:
    enc = await encoder(registry)
    times = [NOW_MS + SKEW_MS, NOW_MS + SKEW_MS + 1, NOW_MS + 86_400_000]
    messages = [
        make_message(enc.encode(make_purchase(created_at=t)), offset=i) for i, t in enumerate(times)
    ]

    validated = await validator(registry).validate(messages, {})

    assert [e.event_time_ms for e in validated.events] == [NOW_MS + SKEW_MS]
    assert [r.reason for r in validated.rejects] == [IngestReason.FUTURE] * 2
    assert "ahead of the clock" in validated.rejects[0].detail
    # A rejected future event does not drag the watermark forward.
    assert validated.watermarks == {0: NOW_MS + SKEW_MS}


# --- watermarks and lateness ----------------------------------------------------------------


def records_at(times: Sequence[int], partition: int = 0) -> tuple[list[Message], list[Any]]:
    """Messages and already-decoded records for ``check`` (no Avro needed)."""
    messages = [make_message(b"", partition, offset) for offset in range(len(times))]
    return messages, [make_purchase(created_at=t) for t in times]


def test_late_means_behind_the_partition_watermark_by_more_than_the_allowed_lateness() -> None:
    check = Validator(make_source(), Decoder(connect("mock://unused"), None), lambda: NOW_MS)
    top = NOW_MS - 1_000
    messages, records = records_at([top, top - LATENESS_MS, top - LATENESS_MS - 1, top + 10])

    validated = check.check(messages, records, {})

    assert [e.event_time_ms for e in validated.events] == [top, top - LATENESS_MS, top + 10]
    (late,) = validated.rejects
    assert (late.reason, late.message.offset) == (IngestReason.LATE, 2)
    assert "behind the partition watermark" in late.detail
    assert validated.watermarks == {0: top + 10}


def test_watermarks_are_per_partition_restorable_and_never_mutated() -> None:
    check = Validator(make_source(), Decoder(connect("mock://unused"), None), lambda: NOW_MS)
    restored = {0: NOW_MS, 1: NOW_MS - 10 * LATENESS_MS}
    old = NOW_MS - 2 * LATENESS_MS
    m0, r0 = records_at([old], partition=0)
    m1, r1 = records_at([old], partition=1)
    m2, r2 = records_at([old], partition=2)

    validated = check.check(m0 + m1 + m2, r0 + r1 + r2, restored)

    assert [r.message.partition for r in validated.rejects] == [0]  # late only on partition 0
    assert validated.watermarks == {0: NOW_MS, 1: old, 2: old}
    assert restored == {0: NOW_MS, 1: NOW_MS - 10 * LATENESS_MS}


def test_a_message_of_another_topic_is_a_wiring_error() -> None:
    check = Validator(make_source(), Decoder(connect("mock://unused"), None), lambda: NOW_MS)
    message = Message("other", 0, 0, None, b"", (), NOW_MS)
    with pytest.raises(ForeignTopicError, match="other"):
        check.check([message], [make_purchase()], {})


event_times = st.lists(
    st.integers(NOW_MS - 5 * LATENESS_MS, NOW_MS + 2 * SKEW_MS), min_size=0, max_size=40
)


@given(times=event_times, cuts=st.lists(st.integers(0, 40), max_size=4))
def test_split_batches_with_carried_watermarks_decide_like_one_batch(
    times: list[int], cuts: list[int]
) -> None:
    check = Validator(make_source(), Decoder(connect("mock://unused"), None), lambda: NOW_MS)
    messages, records = records_at(times)
    whole = check.check(messages, records, {})

    bounds = [0, *sorted(c for c in cuts if c <= len(times)), len(times)]
    watermarks: dict[int, int] = {}
    events: list[Event] = []
    rejects: list[Reject] = []
    for start, end in itertools.pairwise(bounds):
        part = check.check(messages[start:end], records[start:end], watermarks)
        events += part.events
        rejects += part.rejects
        watermarks = part.watermarks

    assert events == whole.events
    assert rejects == whole.rejects
    assert watermarks == whole.watermarks


@given(times=event_times)
def test_accepted_events_keep_the_rules_and_the_watermark_is_their_maximum(
    times: list[int],
) -> None:
    check = Validator(make_source(), Decoder(connect("mock://unused"), None), lambda: NOW_MS)
    messages, records = records_at(times)

    validated = check.check(messages, records, {})

    assert len(validated.events) + len(validated.rejects) == len(times)
    high: int | None = None
    accepted = {e.offset for e in validated.events}
    for offset, t in enumerate(times):
        admissible = t <= NOW_MS + SKEW_MS and (high is None or t >= high - LATENESS_MS)
        assert (offset in accepted) == admissible
        if admissible:
            high = t if high is None else max(high, t)
    assert validated.watermarks == ({} if high is None else {0: high})


async def test_rejects_and_accepts_are_counted_per_topic_and_reason(
    registry: AsyncRegistryClient,
) -> None:
    prometheus = CollectorRegistry()
    metrics = IngestMetrics(prometheus)
    source = make_source()
    check = Validator(source, Decoder(registry, PURCHASE), lambda: NOW_MS, metrics)
    good = (await encoder(registry)).encode(make_purchase())
    messages = [make_message(v) for v in (good, b"\x01xxxx", b"\x02xxxx", b"", good, good)]

    await check.validate(messages, {})

    def value(name: str, **labels: str) -> float | None:
        return prometheus.get_sample_value(name, labels)

    assert value("streamfs_ingest_accepted_events_total", topic=TOPIC) == 3
    assert value("streamfs_ingest_rejected_events_total", topic=TOPIC, reason="bad_magic") == 2
    assert value("streamfs_ingest_rejected_events_total", topic=TOPIC, reason="too_short") == 1


# --- the Source definition ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"key_field": "customer"}, "key_field 'customer' is not a field"),
        ({"event_time_field": "when"}, "event_time_field 'when' is not a field"),
        ({"event_time_field": "amount"}, "event_time_field 'amount' has type"),
        ({"key_field": "amount"}, "key_field 'amount' has type"),
        ({"allowed_lateness_ms": -1}, "allowed_lateness_ms"),
        ({"max_future_skew_ms": 1.5}, "max_future_skew_ms"),
        ({"topic": "no spaces"}, "topic 'no spaces'"),
        ({"schema_subject": ""}, "schema_subject"),
        ({"reader_schema": "{not json"}, "not JSON"),
        ({"reader_schema": '"string"'}, "not an Avro record"),
        (
            {
                "reader_schema": schema_with(
                    {"created_at": {"type": {"type": "long", "logicalType": "timestamp-micros"}}}
                )
            },
            "epoch milliseconds",
        ),
    ],
)
def test_a_bad_source_names_itself_and_the_field(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(DefinitionError, match=match) as caught:
        make_source(**overrides)
    assert "source 'purchases'" in str(caught.value)


def test_a_source_accepts_nullable_key_and_time_fields() -> None:
    nullable = schema_with(
        {"user_id": {"type": ["null", "string"]}, "created_at": {"type": ["null", "long"]}}
    )
    assert make_source(nullable).key_field == "user_id"


# --- dead letters and the batch order -------------------------------------------------------


def test_a_dead_letter_keeps_key_value_and_headers_and_says_why() -> None:
    message = Message(TOPIC, 3, 17, b"k", b"\x01body", (("trace", b"abc"),), NOW_MS)
    letter = dlq.dead_letter(Reject(message, Reason.BAD_MAGIC, "x" * 5_000), NOW_MS + 5)

    assert dlq_topic(TOPIC) == "purchases.dlq"
    assert (letter.topic, letter.key, letter.value) == ("purchases.dlq", b"k", b"\x01body")
    assert letter.headers[0] == ("trace", b"abc")
    headers = dict(letter.headers)
    assert headers[dlq.HEADER_REASON] == b"bad_magic"
    assert headers[dlq.HEADER_TOPIC] == b"purchases"
    assert headers[dlq.HEADER_PARTITION] == b"3"
    assert headers[dlq.HEADER_OFFSET] == b"17"
    assert headers[dlq.HEADER_REJECTED_AT] == str(NOW_MS + 5).encode()
    assert len(headers[dlq.HEADER_DETAIL]) == dlq.MAX_DETAIL_CHARS


async def test_a_batch_dead_letters_before_handing_over_and_a_failing_handler_stops_it(
    registry: AsyncRegistryClient,
) -> None:
    calls: list[str] = []

    class Letters:
        async def send(self, rejects: Sequence[Reject]) -> None:
            calls.append(f"dlq:{len(rejects)}")

    async def handler(events: Sequence[Event]) -> None:
        calls.append(f"events:{len(events)}")
        if len(calls) > 2:
            raise RuntimeError("sink down")

    good = (await encoder(registry)).encode(make_purchase())
    batches = IngestBatches(validator(registry), Letters(), handler)
    marks = await batches.process([make_message(good), make_message(b"\x01zzzz", offset=1)])
    assert calls == ["dlq:1", "events:1"]
    assert marks == {0: NOW_MS}
    assert batches.watermarks == {}  # adopted by the caller only after its commit

    with pytest.raises(RuntimeError, match="sink down"):
        await batches.process([make_message(good, offset=2)])
