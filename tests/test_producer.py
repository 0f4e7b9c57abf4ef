"""``streamfs produce`` and ``streamfs schemas register``: sample events, file checks, and,
against the real services, the commands run as a user runs them."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyarrow import parquet

from streamfs import cli, produce_command
from streamfs.producer import Pacer, check_file, sample_records
from streamfs.schemas.client import connect
from streamfs.schemas.codec import Decoder
from streamfs.schemas.sample import stepping_clock
from streamfs.settings import Settings
from tests.conftest import Services
from tests.services.kafka_helpers import create_topic, read_to_end, wait_until

REPO = Path(__file__).resolve().parents[1]
AVRO_DIR = REPO / "avro_schemas"
PURCHASE = (AVRO_DIR / "purchase.avsc").read_text()
T0_MS = 1_700_000_000_000


def make_row(**overrides: Any) -> dict[str, Any]:
    return {
        "user_id": "u000042",
        "order_id": "o1",
        "amount": 59.9,
        "currency": "EUR",
        "category": "books",
        "created_at": T0_MS,
        "coupon": None,
        "items": 2,
        "payment_method": "card",
    } | overrides


def test_the_same_seed_gives_the_same_events_and_another_seed_others() -> None:
    def events(seed: int) -> list[dict[str, Any]]:
        clock = stepping_clock(T0_MS, 250)
        return list(sample_records("purchase", seed=seed, entities=50, count=200, clock=clock))

    assert events(7) == events(7)
    assert events(7) != events(8)
    assert len(events(7)) == 200
    assert {e["user_id"] for e in events(7)} <= {f"u{i:06d}" for i in range(50)}


def test_count_zero_streams_without_end() -> None:
    stream = sample_records("page_view", seed=1, entities=5, count=0, clock=lambda: T0_MS)
    assert sum(1 for _, _ in zip(range(2_500), stream, strict=False)) == 2_500


def test_the_pacer_spreads_events_over_time() -> None:
    now = [100.0]
    pacer = Pacer(4.0, lambda: now[0])
    assert pacer.delay_s(0) == 0.0
    assert pacer.delay_s(1) == 0.25
    now[0] = 100.6
    assert pacer.delay_s(2) == 0.0  # behind schedule: no pause
    assert pacer.delay_s(4) == pytest.approx(0.4)
    assert Pacer(0.0).delay_s(1_000) == 0.0


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_rows_are_checked_and_every_bad_one_named_with_file_and_line(
    tmp_path: Path,
) -> None:
    path = write_jsonl(
        tmp_path / "orders.jsonl",
        [
            make_row(),
            make_row(user_id=None),
            "{not json",
            make_row(amount="a lot"),
            {k: v for k, v in make_row().items() if k != "created_at"},
            make_row(items=3, extra="ignored"),
            make_row(created_at="2023-11-14T22:13:20+00:00"),
        ],
    )

    checked = check_file(path, PURCHASE)

    assert [str(p).split(": ")[0:2] for p in checked.problems] == [
        [f"{path}:2", "missing_field"],
        [f"{path}:3", "bad_json"],
        [f"{path}:4", "bad_value"],
        [f"{path}:5", "missing_field"],
    ]
    assert "user_id is null" in str(checked.problems[0])
    assert "created_at is missing" in str(checked.problems[3])
    assert [r["items"] for r in checked.records] == [2, 3, 2]
    assert checked.records[2]["created_at"] == T0_MS
    assert checked.ignored_columns == ["extra"]


def test_csv_cells_are_converted_by_the_schema_and_bad_rows_named_by_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "user_id,order_id,amount,currency,category,created_at,coupon,items\n"
        f"u1,o1,10.5,EUR,books,{T0_MS},,3\n"
        f"u2,o2,ten,EUR,books,{T0_MS},,3\n"
        "u3,o3,1.0\n"
        f",o4,1.0,EUR,books,{T0_MS},,1\n"
        "u5,o5,2.0,USD,toys,2023-11-14T22:13:20Z,VIP20,1\n"
    )

    checked = check_file(path, PURCHASE)

    assert [(p.row, p.reason) for p in checked.problems] == [
        (3, "bad_value"),
        (4, "bad_row"),
        (5, "missing_field"),
    ]
    assert [r["order_id"] for r in checked.records] == ["o1", "o5"]
    assert checked.records[0] | {"coupon": None} == checked.records[0]
    assert checked.records[0]["payment_method"] == "card"  # the schema's default
    assert checked.records[1]["created_at"] == T0_MS
    assert checked.records[1]["coupon"] == "VIP20"


def test_parquet_rows_are_checked_with_their_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "orders.parquet"
    when = datetime.fromtimestamp(T0_MS / 1000, tz=UTC)
    rows = [make_row(created_at=when), make_row(user_id=None, created_at=when)]
    parquet.write_table(pa.Table.from_pylist(rows), path)

    checked = check_file(path, PURCHASE)

    assert [(p.row, p.reason) for p in checked.problems] == [(2, "missing_field")]
    assert checked.records == [make_row()]


def produce_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    produce_command.add_parser(parser.add_subparsers())
    return parser.parse_args(["produce", *argv])


def test_a_file_with_bad_rows_sends_nothing_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "orders.jsonl", [make_row(), make_row(amount=None)])
    # Kafka at a closed port: were anything sent, this would fail instead of returning 1.
    settings = Settings(kafka_bootstrap="127.0.0.1:1", schema_registry_url="mock://unused")
    args = produce_args("--from-file", str(path), "--schemas", str(AVRO_DIR))

    assert produce_command.run(args, settings) == 1

    err = capsys.readouterr().err
    assert f"{path}:2: missing_field: amount is null" in err
    assert "nothing sent: 1 bad row(s)" in err
    assert "--skip-bad" in err


# --- the commands, run as a user runs them, against the real services -----------------------


def _wired(command: str) -> bool:
    parser = cli.build_parser()
    return any(
        isinstance(action, argparse._SubParsersAction) and command in action.choices
        for action in parser._actions
    )


needs_wiring = pytest.mark.skipif(
    not (_wired("produce") and _wired("schemas")),
    reason="streamfs/cli.py does not add produce_command / schemas.register_command yet",
)
STREAMFS = str(Path(sys.executable).parent / "streamfs")


def streamfs(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STREAMFS, *args],
        cwd=REPO,
        env=services.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@needs_wiring
async def test_produce_count_puts_that_many_decodable_keyed_events_on_the_topic(
    services: Services, unique: Callable[[str], str]
) -> None:
    topic = unique("page-views")
    await create_topic(services.kafka_bootstrap, topic, partitions=3)
    run = await asyncio.to_thread(
        streamfs, services, "produce", "--kind", "page_view", "--topic", topic,
        "--count", "300", "--rate", "0", "--seed", "5", "--entities", "20",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"sent 300 page_view events to {topic}" in run.stdout

    records = await read_to_end(services.kafka_bootstrap, topic)
    assert len(records) == 300
    async with connect(services.schema_registry_url) as registry:
        decoded = await Decoder(registry, None).decode_batch([v or b"" for *_, v in records])
    assert all(isinstance(d, dict) for d in decoded)
    assert [k for _, _, k, _ in records] == [d["user_id"].encode() for d in decoded]  # type: ignore[index]


@needs_wiring
async def test_produce_from_a_bad_file_sends_nothing_and_skip_bad_sends_the_good_rows(
    services: Services, unique: Callable[[str], str], tmp_path: Path
) -> None:
    topic = unique("orders")
    await create_topic(services.kafka_bootstrap, topic, partitions=1)
    path = write_jsonl(tmp_path / "orders.jsonl", [make_row(), make_row(user_id=None), make_row()])
    base = ("produce", "--topic", topic, "--from-file", str(path), "--rate", "0")

    refused = await asyncio.to_thread(streamfs, services, *base)
    assert refused.returncode == 1
    assert f"{path}:2: missing_field" in refused.stderr
    assert await read_to_end(services.kafka_bootstrap, topic) == []

    skipped = await asyncio.to_thread(streamfs, services, *base, "--skip-bad")
    assert skipped.returncode == 0, skipped.stderr
    assert f"{path}:2: missing_field" in skipped.stderr
    assert len(await read_to_end(services.kafka_bootstrap, topic)) == 2


@needs_wiring
def test_schemas_register_is_idempotent(services: Services) -> None:
    first = streamfs(services, "schemas", "register", "avro_schemas/")
    second = streamfs(services, "schemas", "register", "avro_schemas/")
    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr

    def ids(out: str) -> list[tuple[str, str]]:
        return [(line.split("\t")[0], line.split("\t")[1]) for line in out.splitlines()]

    assert [s for s, _ in ids(first.stdout)] == ["page_view-value", "purchase-value",
                                                 "user_signup-value"]  # fmt: skip
    assert ids(second.stdout) == ids(first.stdout)
    assert all(line.endswith("\tunchanged") for line in second.stdout.splitlines())


@needs_wiring
async def test_produce_stops_cleanly_on_sigterm_and_reports_what_the_broker_acknowledged(
    services: Services, unique: Callable[[str], str]
) -> None:
    topic = unique("endless")
    await create_topic(services.kafka_bootstrap, topic, partitions=1)
    proc = await asyncio.create_subprocess_exec(
        STREAMFS, "produce", "--topic", topic, "--rate", "200",
        cwd=REPO,
        env=services.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_until(
            lambda: _has_records(services.kafka_bootstrap, topic), 60, "the first events"
        )
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
    out, err = stdout.decode(), stderr.decode()
    assert proc.returncode == 0, err
    sent = int(out.split()[1])
    assert "(stopped by signal)" in out
    assert len(await read_to_end(services.kafka_bootstrap, topic)) == sent > 0


async def _has_records(bootstrap: str, topic: str) -> bool:
    return bool(await read_to_end(bootstrap, topic))
