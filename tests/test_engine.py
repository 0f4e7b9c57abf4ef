"""The engine on one partition: exact tiles, rejects kept apart, replays change nothing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from streamfs.engine import PartitionEngine
from streamfs.ingest import Message, Validator
from streamfs.online import ViewLayout, decode_values
from streamfs.schemas.client import connect, connect_sync
from streamfs.schemas.codec import Decoder, Encoder
from streamfs.schemas.sample import ShopEvents
from tests.worker_fixtures import (
    FEATURES,
    PURCHASE_SCHEMA,
    assert_close,
    brute_force,
    purchase_plan,
    purchase_source,
)

NOW = 1_780_000_000_000


class DictStore:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.data.get(key) for key in keys]

    def apply(self, state: dict[str, bytes]) -> None:
        self.data.update(state)


def make_engine(topic: str, url: str) -> PartitionEngine:
    source = purchase_source(topic)
    decoder = Decoder(connect(url), PURCHASE_SCHEMA)
    return PartitionEngine(
        source, [purchase_plan(source)], Validator(source, decoder, lambda: NOW), lambda: NOW
    )


def messages(
    topic: str, url: str, records: list[dict[str, Any]], first_offset: int = 0
) -> list[Message]:
    encoder = Encoder.registered_sync(connect_sync(url), f"{topic}-value", PURCHASE_SCHEMA)
    return [
        Message(topic, 0, first_offset + i, r["user_id"].encode(), encoder.encode(r), (), NOW)
        for i, r in enumerate(records)
    ]


def view_of(engine: PartitionEngine) -> ViewLayout:
    return engine.views[0].view


async def test_batches_fold_into_exact_windows_and_replays_change_nothing() -> None:
    topic, url = f"p{uuid.uuid4().hex[:6]}", f"mock://{uuid.uuid4().hex}"
    shop = ShopEvents(seed=7, entities=5, clock=lambda: NOW - 3 * 86_400_000)
    records = [shop.purchase() for _ in range(300)]
    # Spread event times over the last three days, out of order within the lateness.
    for i, r in enumerate(records):
        r["created_at"] = NOW - 3 * 86_400_000 + (i * 863_000) - (i % 7) * 600_000
    engine = make_engine(topic, url)
    store = DictStore()
    batch = messages(topic, url, records)
    first = await engine.process(0, batch[:150], store)
    store.apply(first.state)
    second = await engine.process(0, batch[150:], store)
    store.apply(second.state)
    assert first.rejects == []
    assert second.rejects == []

    for user in {r["user_id"] for r in records}:
        key = f"user_purchases@1:{user}"
        raw = store.data[key]
        values = decode_values(view_of(engine), user, raw[8:], [f[0] for f in FEATURES], NOW)
        raw_events = [
            (r["created_at"], i, r) for i, r in enumerate(records) if r["user_id"] == user
        ]
        assert_close(values.values, brute_force(raw_events, NOW))

    # The whole stream again (a crash after the state was stored, before the offset
    # commit): skipped whole, nothing to store, nothing rejected as late.
    replay = await engine.process(0, batch, store)
    assert replay.skipped_replays == len(batch)
    assert (replay.state, replay.rejects, replay.writes) == ({}, [], [])

    # A crash before the second batch's state was stored: the replay from the old state
    # gives the same state and the same online writes.
    fresh = DictStore()
    fresh.apply(first.state)
    again = await engine.process(0, batch[150:], fresh)
    assert again.state == second.state
    assert again.writes == second.writes

    # A consumer that moved back mid-batch (a rebalance's seek) hands over offsets it
    # already gave this batch: each offset counts once.
    fresh = DictStore()
    fresh.apply(first.state)
    twice = await engine.process(0, batch[150:200] + batch[190:], fresh)
    assert twice.skipped_replays == 10
    assert twice.state == second.state
    assert twice.writes == second.writes


async def test_bad_events_are_rejected_with_reasons_and_the_rest_counted() -> None:
    topic, url = f"p{uuid.uuid4().hex[:6]}", f"mock://{uuid.uuid4().hex}"
    shop = ShopEvents(seed=3, entities=2, clock=lambda: NOW - 1_000)
    good = [shop.purchase() for _ in range(4)]
    future = dict(shop.purchase(), created_at=NOW + 3_600_000)
    batch = messages(topic, url, [*good, future])
    garbage = Message(topic, 0, 99, b"u", b"\x07garbage", (), NOW)
    engine = make_engine(topic, url)
    store = DictStore()
    result = await engine.process(0, [*batch, garbage], store)
    store.apply(result.state)
    assert sorted(r.reason for r in result.rejects) == ["bad_magic", "future"]
    assert len(result.events) == 4
    counted = 0
    for user in {r["user_id"] for r in good}:
        raw = store.data[f"user_purchases@1:{user}"]
        counted += decode_values(view_of(engine), user, raw[8:], ["purchases_1h"], NOW).values[
            "purchases_1h"
        ]
    assert counted == 4
