"""Running `streamfs` worker processes in end-to-end tests, and checking them exactly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from streamfs.dlq import HEADER_REASON
from streamfs.names import dlq_topic
from streamfs.online import OnlineReader
from streamfs.schemas.client import connect_sync
from streamfs.schemas.codec import Encoder
from streamfs.schemas.sample import ShopEvents
from tests.conftest import Services
from tests.services.kafka_helpers import produce, read_records
from tests.worker_fixtures import (
    FEATURES,
    PURCHASE_SCHEMA,
    assert_close,
    brute_force,
    purchase_plan,
    purchase_source,
)

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 4


class WorkerProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "faust",
                    "-A",
                    "tests.apps.feature_worker",
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

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)

    def assert_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"worker exited {self.proc.returncode}: {self.log.read_text()[-3000:]}"
            )


@pytest.fixture
def stream(
    services: Services, unique: Callable[[str], str], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    topic, app_id = unique("purchases"), unique("worker")
    base = services.env() | {
        "FW_APP_ID": app_id,
        "FW_TOPIC": topic,
        "FW_PARTITIONS": str(PARTITIONS),
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    workers: list[WorkerProcess] = []

    def worker(
        name: str, redis_url: str | None = None, kafka_bootstrap: str | None = None
    ) -> WorkerProcess:
        env = base | {"FW_DATADIR": str(tmp_path / name)}
        if redis_url:
            env["STREAMFS_REDIS_URL"] = redis_url
        if kafka_bootstrap:
            env["STREAMFS_KAFKA_BOOTSTRAP"] = kafka_bootstrap
        w = WorkerProcess(env, tmp_path / f"{name}.log")
        workers.append(w)
        return w

    yield {"topic": topic, "app_id": app_id, "worker": worker}
    for w in workers:
        w.kill()


def make_events(count: int, users: int, seed: int) -> list[dict[str, Any]]:
    now = time.time_ns() // 1_000_000
    shop = ShopEvents(seed=seed, entities=users, clock=lambda: now)
    events = [shop.purchase() for _ in range(count)]
    # Two days of history up to now, slightly out of order (well within the lateness).
    for i, e in enumerate(events):
        e["created_at"] = now - 2 * 86_400_000 + i * (2 * 86_400_000 // count) - (i % 5) * 30_000
    return events


async def produce_events(
    kafka: str, registry: str, topic: str, events: list[dict[str, Any]]
) -> None:
    encoder = Encoder.registered_sync(connect_sync(registry), f"{topic}-value", PURCHASE_SCHEMA)
    await produce(kafka, topic, [(e["user_id"].encode(), encoder.encode(e)) for e in events])


def check_exact(
    services: Services,
    namespace: str,
    topic: str,
    events: list[dict[str, Any]],
    redis_url: str | None = None,
) -> None:
    """Every user's online values equal a brute-force computation over ``events``."""
    verdict = is_exact(services, namespace, topic, events, redis_url)
    assert verdict, repr(verdict)


class Exactness:
    """The users whose online values differ from the brute force: true when none do.
    Its repr names them, so a timed-out wait says what was still wrong."""

    def __init__(self, users: int, problems: list[str]) -> None:
        self.users, self.problems = users, problems

    def __bool__(self) -> bool:
        return not self.problems

    def __repr__(self) -> str:
        if not self.problems:
            return f"all {self.users} users exact"
        shown = "; ".join(self.problems[:5])
        return f"{len(self.problems)} of {self.users} users inexact, e.g. {shown}"


def is_exact(
    services: Services,
    namespace: str,
    topic: str,
    events: list[dict[str, Any]],
    redis_url: str | None = None,
) -> Exactness:
    """Compare every user's online values with a brute-force computation over ``events``."""
    view = purchase_plan(purchase_source(topic)).view
    reader = OnlineReader(
        redis.Redis.from_url(redis_url or services.redis_url),
        {view.name: view},
        namespace=namespace,
    )
    users = sorted({e["user_id"] for e in events})
    at = time.time_ns() // 1_000_000
    rows = reader.read(users, [f[0] for f in FEATURES], at_ms=at)
    problems = []
    for user, row in zip(users, rows, strict=True):
        mine = [(e["created_at"], i, e) for i, e in enumerate(events) if e["user_id"] == user]
        try:
            assert_close(row.values, brute_force(mine, at))
        except AssertionError as exc:
            problems.append(f"{user} ({len(mine)} events): {exc}")
    return Exactness(len(users), problems)


async def wait_exact(
    services: Services,
    namespace: str,
    topic: str,
    events: list[dict[str, Any]],
    workers: Sequence[WorkerProcess],
    timeout_s: float,
    what: str,
    redis_url: str | None = None,
) -> None:
    """Wait until :func:`is_exact` holds while ``workers`` stay alive; on timeout, fail
    naming the inexact users, what the topic holds and the dead letters by reason."""
    deadline = time.monotonic() + timeout_s
    while True:
        for worker in workers:
            worker.assert_alive()
        verdict = is_exact(services, namespace, topic, events, redis_url)
        if verdict:
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    held = len(await read_records(services.kafka_bootstrap, topic))
    dead = Counter(
        dict(r.headers or ()).get(HEADER_REASON, b"?").decode()
        for r in await read_records(services.kafka_bootstrap, dlq_topic(topic))
    )
    raise AssertionError(
        f"timed out after {timeout_s}s waiting for {what}: {verdict!r}; "
        f"{topic} holds {held} of {len(events)} events; dead letters: {dict(dead) or 'none'}"
    )


def assigned_partitions(log: Path, topic: str) -> set[int]:
    """The partitions of ``topic`` in the worker's latest assignment, as Faust logs it."""
    text = log.read_text(errors="replace")
    start = text.rfind("Setting newly assigned partitions")
    if start == -1:
        return set()
    for line in text[start:].splitlines()[1:12]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 2 and cells[0] == topic:
            return _partition_set(cells[1])
    return set()


def _partition_set(text: str) -> set[int]:
    """Faust's ``{0-1, 3}`` notation as a set."""
    out: set[int] = set()
    for part in text.strip("{}").split(","):
        lo, _, hi = part.strip().partition("-")
        if lo:
            out.update(range(int(lo), int(hi or lo) + 1))
    return out
