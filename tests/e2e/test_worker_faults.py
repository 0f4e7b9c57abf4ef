"""Worker faults with real services: Redis stopped mid-stream, the broker restarted.

Each test runs a private Redis or Kafka (on ports of its own) so it can stop it
without disturbing the others; the worker runs as a separate process.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis

from streamfs.services import kafka as kafka_service
from streamfs.services import process
from streamfs.services import redis as redis_service
from tests.conftest import Services
from tests.e2e.harness import PARTITIONS, check_exact, make_events, produce_events, stream
from tests.services.kafka_helpers import create_topic, group_caught_up, wait_until

__all__ = ["stream"]  # the fixture


def quiet(_message: str) -> None:
    """Progress messages of private services are not needed in test output."""


async def test_redis_stopped_mid_stream_commits_nothing_then_ends_exact(
    services: Services, stream: dict[str, Any], tmp_path: Path
) -> None:
    topic, app_id = stream["topic"], stream["app_id"]
    store = redis_service.start(tmp_path / "redis", quiet)
    port = int(store.address.rsplit(":", 1)[1].split("/")[0])
    try:
        await create_topic(services.kafka_bootstrap, topic, PARTITIONS)
        events = make_events(3_000, users=150, seed=21)
        worker = stream["worker"]("w", redis_url=store.address)
        worker.start()

        async def caught_up() -> bool:
            worker.assert_alive()
            return await group_caught_up(services.kafka_bootstrap, app_id, topic)

        await produce_events(
            services.kafka_bootstrap, services.schema_registry_url, topic, events[:1_000]
        )
        await wait_until(caught_up, 120, "first third processed")

        # Redis goes away (its data saved to disk, as a production Redis would keep it).
        redis.Redis.from_url(store.address).shutdown(save=True)
        await wait_until(lambda: not process.is_running(store), 30, "redis stopped")
        await produce_events(
            services.kafka_bootstrap, services.schema_registry_url, topic, events[1_000:2_000]
        )
        await asyncio.sleep(4)
        worker.assert_alive()
        assert not await group_caught_up(services.kafka_bootstrap, app_id, topic), (
            "offsets were committed for events Redis never accepted"
        )

        store = redis_service.start(tmp_path / "redis", quiet, port=port)
        await produce_events(
            services.kafka_bootstrap, services.schema_registry_url, topic, events[2_000:]
        )
        await wait_until(caught_up, 120, "everything processed after Redis returned")
        check_exact(services, app_id, topic, events, redis_url=store.address)
        assert "redis_write_retry" in worker.log.read_text()
    finally:
        process.stop(store)


async def test_broker_restart_mid_stream_reconnects_and_ends_exact(
    services: Services, stream: dict[str, Any], tmp_path: Path
) -> None:
    topic, app_id = stream["topic"], stream["app_id"]
    service_dir = tmp_path / "kafka"
    service_dir.mkdir()
    settings = services.settings
    broker = kafka_service.start(service_dir, settings.cache_dir, settings.java_home, 384, quiet)
    bootstrap = broker.address
    port = int(bootstrap.rsplit(":", 1)[1])
    controller_port = int(
        next(
            line
            for line in (service_dir / "server.properties").read_text().splitlines()
            if line.startswith("controller.quorum.voters")
        ).rsplit(":", 1)[1]
    )
    try:
        await create_topic(bootstrap, topic, PARTITIONS)
        events = make_events(3_000, users=150, seed=31)
        worker = stream["worker"]("w", kafka_bootstrap=bootstrap)
        worker.start()

        async def caught_up() -> bool:
            worker.assert_alive()
            return await group_caught_up(bootstrap, app_id, topic)

        await produce_events(bootstrap, services.schema_registry_url, topic, events[:1_500])
        await wait_until(caught_up, 120, "first half processed")

        process.stop(broker)
        await asyncio.sleep(3)
        broker = kafka_service.start(
            service_dir,
            settings.cache_dir,
            settings.java_home,
            384,
            quiet,
            ports=(port, controller_port),
        )
        await produce_events(bootstrap, services.schema_registry_url, topic, events[1_500:])
        await wait_until(caught_up, 180, "everything processed after the broker restart")
        check_exact(services, app_id, topic, events)
    finally:
        process.stop(broker)
