"""Service tests: ``streamfs backfill`` keeps good rows, reports bad ones by file and row, and
``--to-online`` seeds Redis with the worker's aggregation of everything the log holds."""

from __future__ import annotations

import asyncio
import csv
import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
import redis.asyncio as redis_asyncio

from streamfs.ingest import Event
from streamfs.offline.backfill import seed_offset
from streamfs.online import OnlineWrite, OnlineWriter, online_key
from streamfs.settings import Settings
from streamfs.store import FeatureStore
from tests.offline.helpers import brute_force, rich_view
from tests.offline.test_backfill_consistency import run
from tests.offline.test_snapshots import same

pytestmark = pytest.mark.timeout(120)

FIELDS = ("user_id", "order_id", "amount", "currency", "category", "created_at", "items")
CHECKED = ("count_1h", "count_2h", "amount_sum_2h", "amount_mean_1h", "last_cat_1h", "gap")


def record(i: int, now_ms: int, user: str | None = None) -> dict[str, Any]:
    return {
        "user_id": user or f"u{i % 4}",
        "order_id": f"o{i}",
        "amount": float(i % 13) + 0.5,
        "currency": "EUR",
        "category": ("books", "games", "garden")[i % 3],
        "created_at": now_ms - (i * 131_000) % 6_000_000,
        "items": 1 + i % 4,
    }


def as_events(records: list[dict[str, Any]]) -> list[Event]:
    return [Event(r["user_id"], r["created_at"], r, -1, i) for i, r in enumerate(records)]


def online_values(settings: Settings, users: list[str], at_ms: int) -> list[dict[str, Any]]:
    features = [f"user_purchases:{n}" for n in CHECKED]
    rows = FeatureStore(settings).get_online_features(users, features, at_ms=at_ms)
    assert isinstance(rows, list)
    return [{n.rpartition(":")[2]: v for n, v in r.values.items()} for r in rows]


def test_csv_and_parquet_bad_rows_by_file_and_row_and_online_equals_brute_force(
    tmp_path: Path, store_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, view = store_settings, rich_view()
    now = time.time_ns() // 1_000_000
    good = [record(i, now) for i in range(40)]
    with (tmp_path / "a.csv").open("w", newline="") as sheet:
        writer = csv.DictWriter(sheet, FIELDS)
        writer.writeheader()
        for i, r in enumerate(good[:20]):
            if i == 4:
                writer.writerow({**r, "amount": "lots"})  # line 6: bad value
            if i == 9:
                writer.writerow({**r, "user_id": ""})  # line 12: no key
            writer.writerow(r)
    rows = [*good[20:], {**good[0], "created_at": None}]  # Parquet row 21: no event time
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b.parquet")
    root, rejects = str(tmp_path / "log"), tmp_path / "rejects.jsonl"

    code = run(
        settings, "backfill", "--source", "purchases", "--from", str(tmp_path / "a.csv"),
        str(tmp_path / "b.parquet"), "--rejects", str(rejects), "--offline-root", root,
        "--to-online",
    )  # fmt: skip
    assert code == 0
    bad = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(Path(b["file"]).name, b["row"], b["reason"]) for b in bad] == [
        ("a.csv", 6, "bad_value"),
        ("a.csv", 12, "missing_field"),
        ("b.parquet", 21, "missing_field"),
    ]
    out = capsys.readouterr().out
    assert "appended 40 events" in out
    assert "wrote 4 of 4 entity states to Redis" in out

    users = [f"u{i}" for i in range(4)]
    events = as_events(good)
    for user, values in zip(users, online_values(settings, users, now), strict=True):
        expected = brute_force(view, events, user, now)
        for name in CHECKED:
            assert same(values[name], expected[name]), (user, name, values[name], expected[name])


def test_a_later_backfill_refreshes_seeds_from_the_whole_log_but_never_the_workers_state(
    tmp_path: Path, store_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, view = store_settings, rich_view()
    now = time.time_ns() // 1_000_000
    first = [record(i, now, "alice") for i in range(10)]
    second = [record(i, now, "alice") for i in range(10, 25)]
    (tmp_path / "1.jsonl").write_text("\n".join(json.dumps(r) for r in first) + "\n")
    (tmp_path / "2.jsonl").write_text("\n".join(json.dumps(r) for r in second) + "\n")
    root = str(tmp_path / "log")
    common = ("--rejects", str(tmp_path / "rejects.jsonl"), "--offline-root", root, "--to-online")
    assert run(settings, "backfill", "--source", "purchases", "--from", str(tmp_path / "1.jsonl"),
               *common) == 0  # fmt: skip
    assert run(settings, "backfill", "--source", "purchases", "--from", str(tmp_path / "2.jsonl"),
               *common) == 0  # fmt: skip
    capsys.readouterr()
    [values] = online_values(settings, ["alice"], now)
    expected = brute_force(view, as_events(first + second), "alice", now)
    for name in CHECKED:
        assert same(values[name], expected[name]), (name, values[name], expected[name])

    # The worker has written bob (offset 7 of his partition): a backfill leaves him alone.
    key = online_key(view.name, 1, "bob", settings.namespace)
    client = redis.Redis.from_url(settings.redis_url or "")
    assert settings.redis_url is not None
    asyncio.run(_worker_write(settings.redis_url, OnlineWrite(key, 7, b"worker", now, 60_000)))
    (tmp_path / "3.jsonl").write_text(json.dumps(record(1, now, "bob")) + "\n")
    assert run(settings, "backfill", "--source", "purchases", "--from", str(tmp_path / "3.jsonl"),
               *common) == 0  # fmt: skip
    assert "wrote 0 of 1 entity states" in capsys.readouterr().out
    assert client.hget(key, "t") == b"worker"
    assert seed_offset(now) < 0
    client.close()


async def _worker_write(url: str, write: OnlineWrite) -> None:
    client = redis_asyncio.Redis.from_url(url)
    try:
        assert await OnlineWriter(client, lambda: write.last_event_time_ms).write([write]) == 1
    finally:
        await client.aclose()
