"""Faust on the real broker: a worker process counts per key in a RocksDB table and keeps
its counts across restarts, including a restart that lost its local RocksDB files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Services
from tests.services.kafka_helpers import (
    create_topic,
    group_caught_up,
    produce,
    read_to_end,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]


class CounterWorker:
    """``faust -A tests.apps.counter worker`` as a separate process."""

    def __init__(self, services: Services, app_id: str, topic: str, datadir: Path, log: Path):
        self.env = services.env() | {
            "COUNTER_BROKER": services.kafka_bootstrap,
            "COUNTER_APP_ID": app_id,
            "COUNTER_TOPIC": topic,
            "COUNTER_DATADIR": str(datadir),
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "faust",
                    "-A",
                    "tests.apps.counter",
                    "worker",
                    "-l",
                    "info",
                    "--without-web",
                ],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker ignored SIGTERM for 60 s; log: {self.log}") from None

    def assert_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{tail}")


@pytest.fixture
def worker(
    services: Services, unique: Callable[[str], str], tmp_path: Path
) -> Iterator[CounterWorker]:
    w = CounterWorker(
        services,
        unique("counter-app"),
        unique("counter-events"),
        tmp_path / "faust-data",
        tmp_path / "worker.log",
    )
    yield w
    w.stop()


def events(keys: int, start: int, count: int) -> list[tuple[bytes, bytes]]:
    return [(f"user-{i % keys}".encode(), b"x") for i in range(start, start + count)]


def expected_counts(records: list[tuple[bytes, bytes]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key, _ in records:
        counts[key.decode()] = counts.get(key.decode(), 0) + 1
    return counts


async def table_counts(bootstrap: str, app_id: str) -> dict[str, int]:
    """The table's current value per key, as its changelog topic holds it."""
    latest: dict[str, int] = {}
    for _p, _o, key, value in await read_to_end(bootstrap, f"{app_id}-counts-changelog"):
        assert key is not None
        assert value is not None
        latest[json.loads(key)] = json.loads(value)[0]  # [count, last offset]
    return latest


async def test_worker_counts_per_key_and_keeps_counts_across_restarts(
    worker: CounterWorker, kafka_bootstrap: str
) -> None:
    topic, app_id = worker.env["COUNTER_TOPIC"], worker.env["COUNTER_APP_ID"]
    await create_topic(kafka_bootstrap, topic, partitions=4)
    sent: list[tuple[bytes, bytes]] = []

    async def counts_are(expected: dict[str, int]) -> bool:
        worker.assert_alive()
        return await table_counts(kafka_bootstrap, app_id) == expected

    # 1. A fresh worker counts a backlog.
    first = events(keys=50, start=0, count=2_000)
    await produce(kafka_bootstrap, topic, first)
    sent += first
    worker.start()
    await wait_until(lambda: counts_are(expected_counts(sent)), 120, "first counts")

    # Faust is at-least-once: events processed after its last offset commit are processed
    # again after a restart. Stop once it has committed, as streamfs's own checkpoint will.
    async def committed() -> bool:
        return await group_caught_up(kafka_bootstrap, app_id, topic)

    await wait_until(committed, 60, "offsets committed")

    # 2. Stopped and restarted on the same RocksDB files: counts go on from where they were.
    worker.stop()
    worker.start()
    second = events(keys=60, start=2_000, count=1_000)
    await produce(kafka_bootstrap, topic, second)
    sent += second
    await wait_until(lambda: counts_are(expected_counts(sent)), 120, "counts after restart")

    await wait_until(committed, 60, "offsets committed")

    # 3. Restarted with its local state gone: the table is rebuilt from the changelog topic.
    worker.stop()
    shutil.rmtree(worker.env["COUNTER_DATADIR"])
    worker.start()
    third = events(keys=70, start=3_000, count=500)
    await produce(kafka_bootstrap, topic, third)
    sent += third
    await wait_until(
        lambda: counts_are(expected_counts(sent)), 120, "counts after losing local state"
    )
    assert sum(expected_counts(sent).values()) == 3_500
