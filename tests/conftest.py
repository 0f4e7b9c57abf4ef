"""Fixtures for every tier of tests.

Service tests get the real Kafka and Redis on 127.0.0.1, found in this order:
1. ``STREAMFS_KAFKA_BOOTSTRAP`` / ``STREAMFS_REDIS_URL`` in the environment;
2. services already started by ``streamfs services up`` (its run directory);
3. services started now by the services manager, and stopped at the end;
4. testcontainers, where a Docker engine answers and the manager cannot run.

Each test isolates itself with unique topic names and Redis key prefixes
(the ``unique`` fixture), so tests pass in any order and when rerun.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from streamfs.errors import ServiceError
from streamfs.services import ServicesManager
from streamfs.services.kafka import healthy as kafka_healthy
from streamfs.services.redis import healthy as redis_healthy
from streamfs.settings import ENV_PREFIX, Settings


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    redis_url: str
    settings: Settings

    def env(self) -> dict[str, str]:
        """The environment a streamfs subprocess needs to find these services."""
        env = dict(os.environ)
        env[ENV_PREFIX + "KAFKA_BOOTSTRAP"] = self.kafka_bootstrap
        env[ENV_PREFIX + "REDIS_URL"] = self.redis_url
        return env


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    settings = Settings.from_env(os.environ)
    if settings.kafka_bootstrap and settings.redis_url:
        if not kafka_healthy(settings.kafka_bootstrap):
            pytest.fail(f"STREAMFS_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} does not answer")
        if not redis_healthy(settings.redis_url):
            pytest.fail(f"STREAMFS_REDIS_URL={settings.redis_url} does not answer")
        yield Services(settings.kafka_bootstrap, settings.redis_url, settings)
        return

    manager = ServicesManager(settings)
    already = manager.published_addresses()
    try:
        addresses = manager.up()
    except ServiceError as exc:
        if not _docker_engine():
            pytest.fail(f"cannot start the local services: {exc}")
        yield from _testcontainers(settings)
        return
    started_here = set(addresses) - set(already)
    resolved = settings.with_addresses(addresses)
    assert resolved.kafka_bootstrap and resolved.redis_url
    yield Services(resolved.kafka_bootstrap, resolved.redis_url, resolved)
    if started_here:
        manager.down()


def _testcontainers(settings: Settings) -> Iterator[Services]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    with KafkaContainer().with_kraft() as kafka_c, RedisContainer() as redis_c:
        host = redis_c.get_container_host_ip()
        url = f"redis://{host}:{redis_c.get_exposed_port(6379)}/0"
        bootstrap = kafka_c.get_bootstrap_server()
        yield Services(bootstrap, url, settings.with_addresses({
            ENV_PREFIX + "KAFKA_BOOTSTRAP": bootstrap, ENV_PREFIX + "REDIS_URL": url,
        }))


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(services: Services) -> str:
    return services.redis_url


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names no other test (or earlier run) uses: ``unique("events")`` -> ``t3f9a1c2-events``."""
    token = uuid.uuid4().hex[:8]

    def make(name: str) -> str:
        return f"t{token}-{name}"

    return make
