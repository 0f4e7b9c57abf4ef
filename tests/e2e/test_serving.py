"""End to end: events pushed over HTTP and with the SDK, a `streamfs worker` process
folding them into Redis and the offline log, features read back over HTTP and the SDK,
exact against a brute force; online equal to offline (`streamfs check-consistency`)
after late and out-of-order events; and the web view in headless chromium showing a
value change live."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.dataset as ds
import pytest
from aiohttp.test_utils import TestClient, TestServer

from streamfs.definitions import FeatureView
from streamfs.services.process import free_port
from streamfs.serving.app import Server, ServerOptions, build_app
from streamfs.settings import ENV_PREFIX
from tests.conftest import Services
from tests.e2e.browser import chromium, chromium_binary
from tests.e2e.harness import make_events
from tests.services.kafka_helpers import create_topic, wait_until
from tests.serving.fixtures import VIEW, Deployment, deployment, purchase_view
from tests.worker_fixtures import FEATURES, assert_close, brute_force

__all__ = ["deployment"]  # fixture
pytestmark = [pytest.mark.services, pytest.mark.e2e]
REPO = Path(__file__).resolve().parents[2]
NAMES = [f[0] for f in FEATURES]


@pytest.fixture
def worker_metrics_port() -> int:
    return free_port()


@pytest.fixture
def worker(
    services: Services,
    deployment: Deployment,
    unique: Callable[[str], str],
    tmp_path: Path,
    worker_metrics_port: int,
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts `streamfs worker` on the deployment's registry and namespace, its metrics
    on ``worker_metrics_port``, collecting reference cycles every second."""
    procs: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "worker.log"

    def start() -> subprocess.Popen[bytes]:
        env = services.env() | {
            ENV_PREFIX + "REGISTRY_TOPIC": deployment.settings.registry_topic,
            ENV_PREFIX + "NAMESPACE": deployment.namespace,
            ENV_PREFIX + "OFFLINE_ROOT": str(tmp_path / "offline"),
        }
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "streamfs.cli", "worker",
                    "--app-id", unique("worker"), "--name", unique("w"),
                    "--data-dir", str(tmp_path / "state"), "--refresh", "1",
                    "--batch-size", "500", "--gc-interval", "1",
                    "--metrics-port", str(worker_metrics_port),
                ],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(30)
    print(log.read_text(errors="replace")[-3000:])  # shown by pytest when the test failed


async def _cycle_collections(port: int) -> float:
    """How many scheduled cycle collections the worker's metrics endpoint reports."""
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    name = "streamfs_worker_cycle_collection_seconds_count"
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


async def _server(deployment: Deployment) -> TestClient[Any, Any]:
    server = Server(
        deployment.settings,
        ServerOptions(refresh_s=1.0, stream_interval_s=0.2),
        deployment.store.registry_state,
    )
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(server)))
    await client.start_server()
    return client


async def test_pushed_events_read_back_exact_over_http_and_the_sdk(
    deployment: Deployment,
    worker: Callable[[], subprocess.Popen[bytes]],
    worker_metrics_port: int,
) -> None:
    kafka = deployment.settings.kafka_bootstrap or ""
    await create_topic(kafka, deployment.topic, 2)
    worker()
    client = await _server(deployment)
    try:
        events = make_events(1_500, users=60, seed=3)
        for start in range(0, 1_200, 400):
            response = await client.post(
                "/v1/push/purchases", json={"events": events[start : start + 400]}
            )
            assert response.status == 200, await response.text()
        assert deployment.store.push("purchases", events[1_200:]) == 300
        users = sorted({e["user_id"] for e in events})

        async def http_exact() -> bool:
            response = await client.post(
                "/v1/features/online", json={"entities": users, "features": NAMES}
            )
            rows = (await response.json())["results"]
            try:
                for user, row in zip(users, rows, strict=True):
                    assert_close(row["features"], _expected(events, user, row["as_of_ms"]))
            except AssertionError:
                return False
            return True

        await wait_until(http_exact, 60, "HTTP reads to equal the brute force")
        at = time.time_ns() // 1_000_000
        rows = deployment.store.get_online_features(users, NAMES, at_ms=at)
        assert isinstance(rows, list)
        for user, row in zip(users, rows, strict=True):
            assert_close(row.values, _expected(events, user, at))
            assert row.last_event_time_ms[VIEW] == max(
                e["created_at"] for e in events if e["user_id"] == user
            )
        one = await client.get(f"/v1/features/online/{VIEW}/{users[0]}?features=purchases_24h")
        assert (await one.json())["features"]["purchases_24h"] == _expected(
            events, users[0], (await one.json())["as_of_ms"]
        )["purchases_24h"]
        # Exact with the automatic cyclic collector off; the worker runs its own, each second.

        async def collected() -> bool:
            return await _cycle_collections(worker_metrics_port) >= 2

        await wait_until(collected, 30, "the worker's scheduled cycle collections")
    finally:
        await client.close()


async def test_online_equals_offline_after_late_and_out_of_order_events(
    services: Services,
    deployment: Deployment,
    worker: Callable[[], subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    kafka = deployment.settings.kafka_bootstrap or ""
    await create_topic(kafka, deployment.topic, 2)
    worker()
    # Two days of history, out of order by up to 2 minutes (within the 1 h lateness)...
    events = make_events(1_000, users=40, seed=17)
    assert deployment.store.push("purchases", events) == len(events)
    users = sorted({e["user_id"] for e in events})

    def online_exact() -> bool:
        return _online_exact(deployment, users, events)

    await wait_until(online_exact, 60, "the worker to catch up")
    # ...then events three days late: the DLQ's, in neither store.
    late = [dict(e, created_at=e["created_at"] - 3 * 86_400_000) for e in events[-20:]]
    assert deployment.store.push("purchases", late) == len(late)
    await wait_until(online_exact, 30, "late events to pass without changing anything")

    # The worker's feature snapshots: every user's newest row holds the values its
    # last batch gave Redis, i.e. all of its (in-time) events valued at the write time.
    snapshots = ds.dataset(
        tmp_path / "offline" / "v1" / f"view={VIEW}", format="parquet", partitioning="hive"
    ).to_table()
    newest: dict[str, dict[str, Any]] = {}
    for row in snapshots.to_pylist():
        seen = newest.get(row["_entity_key"])
        if seen is None or row["_write_time_ms"] > seen["_write_time_ms"]:
            newest[row["_entity_key"]] = row
    assert sorted(newest) == users
    for user, row in newest.items():
        values = {name: row[name] for name in NAMES}
        assert_close(values, _expected(events, user, row["_write_time_ms"]))

    check = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streamfs.cli", "check-consistency", "--view", VIEW,
         "--sample", str(len(users)), "--offline-root", str(tmp_path / "offline")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        env=services.env() | {
            ENV_PREFIX + "REGISTRY_TOPIC": deployment.settings.registry_topic,
            ENV_PREFIX + "NAMESPACE": deployment.namespace,
        },
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"checked {len(users)} entities of view {VIEW!r}: 0 mismatches" in check.stdout


async def test_a_backfilled_entity_keeps_its_history_when_new_events_stream_in(
    services: Services,
    deployment: Deployment,
    worker: Callable[[], subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """``backfill --to-online`` seeds Redis; the worker, which has no state for those
    entities, starts them from the seed instead of from nothing."""
    kafka = deployment.settings.kafka_bootstrap or ""
    await create_topic(kafka, deployment.topic, 2)
    events = make_events(300, users=6, seed=29)
    history, streamed = events[:240], events[240:]
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in history))
    backfill = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streamfs.cli", "backfill", "--source", "purchases",
         "--from", str(tmp_path / "history.jsonl"), "--to-online",
         "--rejects", str(tmp_path / "rejects.jsonl"),
         "--offline-root", str(tmp_path / "offline")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        env=services.env() | {
            ENV_PREFIX + "REGISTRY_TOPIC": deployment.settings.registry_topic,
            ENV_PREFIX + "NAMESPACE": deployment.namespace,
        },
    )  # fmt: skip
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    worker()
    assert deployment.store.push("purchases", streamed) == len(streamed)
    users = sorted({e["user_id"] for e in streamed})

    def history_kept() -> bool:
        return _online_exact(deployment, users, events)

    await wait_until(history_kept, 60, "online values over the backfill and the stream")


async def test_a_view_registered_while_the_worker_runs_is_computed_without_a_restart(
    deployment: Deployment, worker: Callable[[], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """The worker reloads the registry every ``--refresh`` seconds: a view added there is
    folded from the next batch on, beside the views it already computed."""
    kafka = deployment.settings.kafka_bootstrap or ""
    await create_topic(kafka, deployment.topic, 2)
    proc = worker()
    events = make_events(600, users=20, seed=41)
    before, after = events[:300], events[300:]
    assert deployment.store.push("purchases", before) == len(before)
    users = sorted({e["user_id"] for e in before})
    await wait_until(lambda: _online_exact(deployment, users, before), 60, "the first half")

    user, source, view = purchase_view(deployment.topic)
    assert isinstance(view, FeatureView)
    # Feature names are unique across views: the new view's are prefixed.
    features = tuple(dataclasses.replace(f, name=f"o_{f.name}") for f in view.features)
    orders = dataclasses.replace(view, name="user_orders", features=features)
    deployment.store.apply([user, source, view, orders])
    log = tmp_path / "worker.log"
    await wait_until(
        lambda: "user_orders@1" in log.read_text(errors="replace"), 30, "the worker's reload"
    )
    assert deployment.store.push("purchases", after) == len(after)
    users = sorted({e["user_id"] for e in after})

    def both_exact() -> bool:
        return _online_exact(deployment, users, events) and _online_exact(
            deployment, users, after, view="user_orders", prefix="o_"
        )

    await wait_until(both_exact, 60, "the old view over all events, the new one over the rest")
    assert proc.poll() is None  # the same process all along


def _online_exact(
    deployment: Deployment,
    users: list[str],
    events: list[dict[str, Any]],
    view: str = VIEW,
    prefix: str = "",
) -> bool:
    """Every user's online values of ``view`` (its features named ``prefix`` + one of
    :data:`NAMES`) now equal a brute force over ``events``."""
    at = time.time_ns() // 1_000_000
    names = [f"{view}:{prefix}{n}" for n in NAMES]
    rows = deployment.store.get_online_features(users, names, at_ms=at)
    assert isinstance(rows, list)
    try:
        for user, row in zip(users, rows, strict=True):
            values = {
                name.rpartition(":")[2].removeprefix(prefix): value
                for name, value in row.values.items()
            }
            assert_close(values, _expected(events, user, at))
    except AssertionError:
        return False
    return True


def _expected(events: list[dict[str, Any]], user: str, at_ms: int) -> dict[str, Any]:
    mine = [(e["created_at"], i, e) for i, e in enumerate(events) if e["user_id"] == user]
    return brute_force(mine, at_ms)


@pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed")
async def test_the_web_view_shows_a_looked_up_entity_changing_live(
    deployment: Deployment, worker: Callable[[], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    kafka = deployment.settings.kafka_bootstrap or ""
    await create_topic(kafka, deployment.topic, 1)
    worker()
    client = await _server(deployment)
    now = time.time_ns() // 1_000_000

    def purchase(n: int) -> dict[str, Any]:
        return {
            "user_id": "u_browser", "order_id": f"o{n}", "amount": 10.0 * n,
            "currency": "EUR", "category": "books", "created_at": now - 60_000 + n,
        }  # fmt: skip

    try:
        assert (await client.post("/v1/push/purchases", json={"events": [purchase(1)]})).ok
        binary = chromium_binary()
        assert binary is not None
        async with chromium(binary, tmp_path / "profile") as page:
            await page.goto(str(client.make_url("/")))
            assert await page.evaluate("document.querySelector('h1').textContent") == (
                "Feature views"
            )
            assert VIEW in await page.evaluate("document.getElementById('views').textContent")
            await page.evaluate(
                "document.getElementById('entity').value = 'u_browser';"
                "document.querySelector('#lookup button').click()"
            )
            value = "document.getElementById('value-purchases_24h')?.textContent"
            await page.wait_for(f"{value} === '1'", 60, "the first event on the page")
            assert (await client.post("/v1/push/purchases", json={"events": [purchase(2)]})).ok
            await page.wait_for(f"{value} === '2'", 30, "the page to update by itself")
            await page.wait_for(
                "document.getElementById('fresh-user_purchases').textContent.includes('lag')",
                15,
                "freshness",
            )
    finally:
        await client.close()
