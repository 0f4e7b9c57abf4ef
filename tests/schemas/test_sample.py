"""Sample shop events: reproducible, within their key space, valid against the .avsc files."""

from __future__ import annotations

import json
from pathlib import Path

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamfs.errors import ConfigError
from streamfs.schemas.sample import (
    EVENT_TIME_FIELDS,
    KINDS,
    SCHEMA_FILES,
    Kind,
    ShopEvents,
    stepping_clock,
)

AVRO_DIR = Path(__file__).resolve().parents[2] / "avro_schemas"
T0_MS = 1_700_000_000_000


def shop(seed: int, entities: int = 100, disorder_ms: int = 0) -> ShopEvents:
    return ShopEvents(
        seed=seed, entities=entities, clock=stepping_clock(T0_MS, 10), disorder_ms=disorder_ms
    )


@given(seed=st.integers(0, 2**32), kind=st.sampled_from(KINDS))
def test_same_seed_same_events(seed: int, kind: Kind) -> None:
    assert list(shop(seed).events(kind, 20)) == list(shop(seed).events(kind, 20))


def test_other_seed_other_events() -> None:
    assert list(shop(1).mixed(50)) != list(shop(2).mixed(50))


@pytest.mark.parametrize("kind", KINDS)
def test_events_fit_their_schema_and_key_space(kind: Kind) -> None:
    schema = fastavro.parse_schema(json.loads((AVRO_DIR / SCHEMA_FILES[kind]).read_text()))
    events = list(shop(3, entities=50).events(kind, 500))
    for event in events:
        assert fastavro.validate(event, schema, raise_errors=True)
    assert {int(e["user_id"][1:]) for e in events} <= set(range(50))
    times = [e[EVENT_TIME_FIELDS[kind]] for e in events]
    assert times == list(range(T0_MS, T0_MS + 10 * len(events), 10))


def test_disorder_moves_event_time_back_by_at_most_the_bound() -> None:
    events = list(shop(4, disorder_ms=1_000).events("page_view", 300))
    lags = [T0_MS + 10 * i - e["viewed_at"] for i, e in enumerate(events)]
    assert all(0 <= lag <= 1_000 for lag in lags)
    assert any(lag > 0 for lag in lags)


def test_entities_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="entities"):
        shop(1, entities=0)
