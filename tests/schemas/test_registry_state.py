"""The registry's log records and state machine, without Kafka or HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamfs.schemas.registry import commands
from streamfs.schemas.registry.compat import Compatibility
from streamfs.schemas.registry.errors import StoreError
from streamfs.schemas.registry.parsing import parse
from streamfs.schemas.registry.records import (
    ConfigRecord,
    ConfigTombstone,
    IdWatermark,
    Record,
    SchemaRecord,
    SchemaTombstone,
    decode,
    encode,
)
from streamfs.schemas.registry.state import RegistryState

A = '{"type": "record", "name": "A", "fields": [{"name": "x", "type": "int"}]}'
B = '{"type": "record", "name": "B", "fields": []}'


@pytest.mark.parametrize(
    "record",
    [
        SchemaRecord("s", 3, 7, A),
        SchemaRecord("s", 3, 7, A, deleted=True),
        SchemaTombstone("s", 3),
        ConfigRecord(None, Compatibility.FULL),
        ConfigRecord("s", Compatibility.NONE),
        ConfigTombstone("s"),
        IdWatermark(41),
    ],
)
def test_records_round_trip(record: Record) -> None:
    assert decode(*encode(record)) == record


def test_keys_look_like_confluents_and_a_version_keeps_one_key() -> None:
    key, value = encode(SchemaRecord("s", 1, 2, A))
    assert json.loads(key) == {"keytype": "SCHEMA", "subject": "s", "version": 1, "magic": 1}
    assert value is not None
    assert json.loads(value) == {
        "subject": "s",
        "version": 1,
        "id": 2,
        "schema": A,
        "deleted": False,
    }
    # Compaction keeps the last value per key bytes: soft delete and tombstone share the key.
    assert encode(SchemaRecord("s", 1, 2, A, deleted=True))[0] == key
    assert encode(SchemaTombstone("s", 1))[0] == key


def test_unknown_and_malformed_records() -> None:
    assert decode(b'{"keytype":"NOOP","magic":0}', b"{}") is None
    with pytest.raises(StoreError):
        decode(b"not json", b"{}")
    with pytest.raises(StoreError):
        decode(b'{"keytype":"SCHEMA","subject":"s","version":1,"magic":1}', b'{"id": 1}')


def test_replaying_the_records_rebuilds_the_same_state() -> None:
    live, log = RegistryState(), []

    def run(plan: commands.Outcome[Any]) -> object:
        for record in plan.records:
            live.apply(record)
            log.append(encode(record))
        return plan.result

    run(commands.register(live, "s", parse(A)))
    run(commands.register(live, "t", parse(A)))
    run(commands.set_config(live, "s", Compatibility.NONE))
    run(commands.register(live, "s", parse(B)))
    run(commands.delete_version(live, "s", 1, permanent=False))

    replayed = RegistryState()
    for key, value in log:
        decoded = decode(key, value)
        assert decoded is not None
        replayed.apply(decoded)
    for state in (live, replayed):
        assert state.subjects() == ["s", "t"]
        assert [v.version for v in state.versions("s", include_deleted=True)] == [1, 2]
        assert [v.version for v in state.live_versions("s")] == [2]
        assert state.config("s") is Compatibility.NONE
        assert state.schema_text(1) == A
        assert state.max_id == 2


def test_a_record_that_reuses_an_id_for_another_schema_is_refused() -> None:
    state = RegistryState()
    state.apply(SchemaRecord("s", 1, 1, A))
    with pytest.raises(StoreError):
        state.apply(SchemaRecord("t", 1, 1, B))
    assert state.subjects() == ["s"]


def test_the_watermark_keeps_erased_ids_used() -> None:
    state = RegistryState()
    state.apply(SchemaRecord("s", 1, 5, A))
    state.apply(SchemaTombstone("s", 1))
    assert state.max_id == 5  # still known from the record itself
    fresh = RegistryState()  # after compaction dropped both, only the watermark remains
    fresh.apply(IdWatermark(5))
    assert commands.register(fresh, "s", parse(B)).result.schema_id == 6
