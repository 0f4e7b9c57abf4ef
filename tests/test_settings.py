"""Settings come from STREAMFS_* variables, once, with defaults and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamfs.errors import ConfigError
from streamfs.settings import Settings


def test_unset_and_empty_variables_keep_the_defaults() -> None:
    settings = Settings.from_env({"STREAMFS_KAFKA_BOOTSTRAP": "", "HOME": "/nowhere"})
    assert settings.kafka_bootstrap is None
    assert settings.redis_url is None
    assert settings.kafka_heap_mb == 512
    assert settings.resolved_run_dir == settings.cache_dir / "run"


def test_variables_fill_the_settings() -> None:
    settings = Settings.from_env(
        {
            "STREAMFS_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
            "STREAMFS_REDIS_URL": "redis://127.0.0.1:6379/0",
            "STREAMFS_SCHEMA_REGISTRY_URL": "http://127.0.0.1:8081",
            "STREAMFS_CACHE_DIR": "/tmp/sfs-cache",
            "STREAMFS_RUN_DIR": "/tmp/sfs-run",
            "STREAMFS_KAFKA_HEAP_MB": "384",
            "JAVA_HOME": "/usr/lib/jvm/java-17-openjdk-amd64",
        }
    )
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.schema_registry_url == "http://127.0.0.1:8081"
    assert settings.cache_dir == Path("/tmp/sfs-cache")
    assert settings.resolved_run_dir == Path("/tmp/sfs-run")
    assert settings.kafka_heap_mb == 384
    assert settings.java_home == "/usr/lib/jvm/java-17-openjdk-amd64"


def test_a_malformed_number_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"STREAMFS_KAFKA_HEAP_MB.*'lots'"):
        Settings.from_env({"STREAMFS_KAFKA_HEAP_MB": "lots"})


def test_published_addresses_fill_only_what_is_missing() -> None:
    settings = Settings(kafka_bootstrap="10.0.0.1:9092").with_addresses(
        {"STREAMFS_REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    assert settings.kafka_bootstrap == "10.0.0.1:9092"
    assert settings.redis_url == "redis://127.0.0.1:1/0"


def test_importing_streamfs_starts_no_loop_and_loads_no_heavy_library() -> None:
    code = (
        "import sys, streamfs, streamfs.settings, streamfs.cli;"
        "heavy = {'faust', 'aiokafka', 'redis', 'aiohttp', 'pyarrow', 'duckdb'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_kafka_cluster_ids_are_valid_and_never_read_as_an_option() -> None:
    import base64

    from streamfs.services.kafka import cluster_id

    ids = {cluster_id() for _ in range(2_000)}
    assert len(ids) == 2_000
    for value in ids:
        assert not value.startswith("-")
        assert len(base64.urlsafe_b64decode(value + "==")) == 16


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--batch-size", "0"),
        ("--cache-entities", "-1"),
        ("--gc-interval", "-1"),
        ("--fetch-min-bytes", "0"),
    ],
    ids=["batch", "cache", "gc", "fetch"],
)
def test_the_worker_refuses_a_batch_or_cache_size_or_interval_or_fetch_size_it_cannot_use(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamfs.cli import main

    assert main(["worker", flag, value]) == 2
    err = capsys.readouterr().err
    assert flag in err
    assert value in err
