"""Fixtures for every tier of tests.

Service tests get the real Kafka, Redis and schema registry on 127.0.0.1, found in this order:
1. ``STREAMFS_KAFKA_BOOTSTRAP`` / ``STREAMFS_REDIS_URL`` / ``STREAMFS_SCHEMA_REGISTRY_URL``;
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
from streamfs.settings import ENV_PREFIX, Settings


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    redis_url: str
    schema_registry_url: str
    settings: Settings

    def env(self) -> dict[str, str]:
        """The environment a streamfs subprocess needs to find these services."""
        env = dict(os.environ)
        env[ENV_PREFIX + "KAFKA_BOOTSTRAP"] = self.kafka_bootstrap
        env[ENV_PREFIX + "REDIS_URL"] = self.redis_url
        env[ENV_PREFIX + "SCHEMA_REGISTRY_URL"] = self.schema_registry_url
        return env


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    # The manager uses every service the environment names (and that answers) as it is,
    # and starts the rest; a second run finds those that `streamfs services up` started.
    settings = Settings.from_env(os.environ)
    manager = ServicesManager(settings)
    already = manager.published_addresses()
    try:
        addresses = manager.up()
    except ServiceError as exc:
        if not _docker_engine():
            pytest.fail(f"cannot start the local services: {exc}")
        yield from _testcontainers(settings)
        return
    resolved = settings.with_addresses(addresses)
    assert resolved.kafka_bootstrap
    assert resolved.redis_url
    assert resolved.schema_registry_url
    yield Services(
        resolved.kafka_bootstrap, resolved.redis_url, resolved.schema_registry_url, resolved
    )
    if set(manager.published_addresses()) - set(already):
        manager.down()  # this session started them; leave nothing running


def _testcontainers(settings: Settings) -> Iterator[Services]:
    """Kafka and Redis in containers; the schema registry is ours, run in-process on them."""
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    from streamfs.services import schema_registry

    with KafkaContainer().with_kraft() as kafka_c, RedisContainer() as redis_c:
        host = redis_c.get_container_host_ip()
        url = f"redis://{host}:{redis_c.get_exposed_port(6379)}/0"
        bootstrap = kafka_c.get_bootstrap_server()
        run_dir = settings.resolved_run_dir / "testcontainers-registry"
        run_dir.mkdir(parents=True, exist_ok=True)
        state = schema_registry.start(run_dir, bootstrap, lambda _m: None)
        try:
            yield Services(
                bootstrap,
                url,
                state.address,
                settings.with_addresses(
                    {
                        ENV_PREFIX + "KAFKA_BOOTSTRAP": bootstrap,
                        ENV_PREFIX + "REDIS_URL": url,
                        ENV_PREFIX + "SCHEMA_REGISTRY_URL": state.address,
                    }
                ),
            )
        finally:
            from streamfs.services import process

            process.stop(state)


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(services: Services) -> str:
    return services.redis_url


@pytest.fixture(scope="session")
def schema_registry_url(services: Services) -> str:
    return services.schema_registry_url


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names no other test (or earlier run) uses: ``unique("events")`` -> ``t3f9a1c2-events``."""
    token = uuid.uuid4().hex[:8]

    def make(name: str) -> str:
        return f"t{token}-{name}"

    return make
