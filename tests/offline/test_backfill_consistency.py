"""Service tests: backfill files into the log and Redis, then check online against offline."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest

from streamfs.offline import command
from streamfs.settings import Settings
from tests.offline.helpers import rich_view

pytestmark = pytest.mark.timeout(120)


def run(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.handler(args, settings))


def rows(now_ms: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(60):
        out.append(
            {
                "user_id": f"u{i % 5}",
                "order_id": f"o{i}",
                "amount": float(i % 17) + 0.25,
                "currency": "EUR",
                "category": ("books", "games", "garden")[i % 3],
                "created_at": now_ms - (i * 97_000) % 7_000_000,
                "items": 1 + i % 3,
            }
        )
    return out


def test_backfill_keeps_good_rows_reports_bad_ones_and_online_equals_offline(
    tmp_path: Path, store_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, view = store_settings, rich_view()
    now_ms = time.time_ns() // 1_000_000
    good = rows(now_ms)
    lines = [json.dumps(r) for r in good[:30]]
    lines.insert(3, "{not json")
    lines.insert(7, json.dumps({"user_id": "u1", "order_id": "x", "amount": "lots"}))
    first = tmp_path / "a.jsonl"
    first.write_text("\n".join(lines) + "\n")
    second = tmp_path / "b.jsonl"
    second.write_text("\n".join(json.dumps(r) for r in good[30:]) + "\n")
    root, rejects = str(tmp_path / "log"), tmp_path / "rejects.jsonl"

    code = run(
        settings, "backfill", "--source", "purchases", "--from", str(first), str(second),
        "--rejects", str(rejects), "--offline-root", root, "--to-online",
    )  # fmt: skip
    assert code == 0
    bad = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(b["file"], b["row"]) for b in bad] == [(str(first), 4), (str(first), 8)]
    assert "appended 60 events" in capsys.readouterr().out

    assert run(settings, "check-consistency", "--view", view.name, "--offline-root", root) == 0
    assert "5 entities" in capsys.readouterr().out

    # An event only the offline log has: the check must see it.
    late = tmp_path / "c.jsonl"
    late.write_text(json.dumps({**good[0], "order_id": "extra", "amount": 1000.0}) + "\n")
    run(settings, "backfill", "--source", "purchases", "--from", str(late),
        "--rejects", str(rejects), "--offline-root", root)  # fmt: skip
    capsys.readouterr()
    assert run(settings, "check-consistency", "--view", view.name, "--offline-root", root) == 1
    assert "u0 user_purchases:amount_sum_2h" in capsys.readouterr().out
