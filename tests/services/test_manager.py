"""``streamfs services up | status | down`` as a user runs them: nothing doubled, nothing left."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamfs.errors import ServiceError
from streamfs.services import ServicesManager, process
from streamfs.services import kafka as kafka_service
from streamfs.services import redis as redis_service
from streamfs.settings import ENV_PREFIX, Settings
from tests.conftest import Services


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamfs.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def private_env(run_dir: Path) -> dict[str, str]:
    """The user's environment with no service addresses set and a run directory of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env[ENV_PREFIX + "RUN_DIR"] = str(run_dir)
    if ENV_PREFIX + "CACHE_DIR" in os.environ:  # share the Kafka jars already fetched
        env[ENV_PREFIX + "CACHE_DIR"] = os.environ[ENV_PREFIX + "CACHE_DIR"]
    return env


def parse_exports(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        out[name] = shlex.split(value)[0]
    return out


def test_up_twice_status_and_down_leave_no_process_and_no_port(tmp_path: Path) -> None:
    env = private_env(tmp_path / "run")
    first = run_cli("services", "up", env=env)
    assert first.returncode == 0, first.stderr
    addresses = parse_exports(first.stdout)
    assert set(addresses) == {
        "STREAMFS_KAFKA_BOOTSTRAP",
        "STREAMFS_REDIS_URL",
        "STREAMFS_SCHEMA_REGISTRY_URL",
    }
    # The printed lines are what `eval` runs, and what the env file holds.
    assert (tmp_path / "run" / "env").read_text() == first.stdout
    states = {
        name: process.ProcessState.load(tmp_path / "run" / name / "state.json")
        for name in ("kafka", "redis", "schema-registry")
    }
    assert all(s is not None and process.is_running(s) for s in states.values())

    second = run_cli("services", "up", env=env)
    assert second.returncode == 0, second.stderr
    assert parse_exports(second.stdout) == addresses
    assert "already running" in second.stderr
    for name, state in states.items():
        assert process.ProcessState.load(tmp_path / "run" / name / "state.json") == state

    status = run_cli("services", "status", env=env)
    assert status.returncode == 0, status.stdout
    lines = status.stdout.splitlines()
    assert len(lines) == 3
    assert all(" managed " in line and " healthy " in line for line in lines)

    down = run_cli("services", "down", env=env)
    assert down.returncode == 0, down.stderr
    ports = [
        ("127.0.0.1", int(addr.rsplit(":", 1)[1].split("/")[0])) for addr in addresses.values()
    ]
    for state in states.values():
        assert state is not None
        assert not process.is_running(state)
        assert process.process_start_ticks(state.pid) is None
    assert not any(process.port_is_open(host, port) for host, port in ports)
    assert not (tmp_path / "run" / "env").exists()
    after = run_cli("services", "status", env=env)
    assert after.returncode == 1
    assert all(" stopped " in line for line in after.stdout.splitlines())


def test_up_uses_running_services_named_in_the_environment(
    services: Services, tmp_path: Path
) -> None:
    settings = Settings(
        kafka_bootstrap=services.kafka_bootstrap,
        redis_url=services.redis_url,
        schema_registry_url=services.schema_registry_url,
        run_dir=tmp_path / "run",
    )
    manager = ServicesManager(settings, progress=lambda _m: None)
    addresses = manager.up()
    assert addresses == {
        "STREAMFS_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "STREAMFS_REDIS_URL": services.redis_url,
        "STREAMFS_SCHEMA_REGISTRY_URL": services.schema_registry_url,
    }
    assert not list((tmp_path / "run").glob("*/state.json"))  # started nothing
    assert {s.origin for s in manager.status()} == {"external"}
    assert manager.down() == []  # and stops nothing it did not start


def test_an_address_that_does_not_answer_is_an_error_naming_the_variable(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{process.free_port()}"
    manager = ServicesManager(
        Settings(kafka_bootstrap=dead, run_dir=tmp_path / "run"), progress=lambda _m: None
    )
    with pytest.raises(ServiceError, match=r"STREAMFS_KAFKA_BOOTSTRAP=127\.0\.0\.1:\d+ does not"):
        manager.up()


def test_a_service_that_exits_while_starting_shows_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: cannot open config: permission denied' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(redis_service, "find_redis_server", lambda: str(fake))
    with pytest.raises(ServiceError) as error:
        redis_service.start(tmp_path / "redis", progress=lambda _m: None)
    assert "exited with code 3 while starting" in str(error.value)
    assert "FATAL: cannot open config: permission denied" in str(error.value)


def test_missing_maven_and_java_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither mvn nor java on it
    with pytest.raises(ServiceError, match=r"Maven \(mvn\) not found.*apt-get install maven"):
        kafka_service.fetch(tmp_path / "empty-cache", progress=lambda _m: None)
    with pytest.raises(ServiceError, match=r"Java not found.*JDK 17"):
        kafka_service.find_java(java_home=None)
    monkeypatch.setattr(shutil, "which", lambda *_a, **_k: None)
    with pytest.raises(ServiceError, match="redis-server not found"):
        redis_service.find_redis_server()


def test_the_kafka_version_lives_in_the_pom_and_compose_uses_the_same() -> None:
    version = kafka_service.kafka_version()
    assert version.startswith("4.")
    compose = (Path(__file__).resolve().parents[2] / "compose" / "docker-compose.yml").read_text()
    assert f"apache/kafka:{version}" in compose
