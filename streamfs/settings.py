"""Settings: every knob streamfs reads, read once at the edge from ``STREAMFS_*`` variables.

Nothing below the CLI (or the SDK's constructor) reads ``os.environ``; they take a
:class:`Settings` and pass it down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from streamfs.errors import ConfigError
from streamfs.names import REGISTRY_TOPIC

ENV_PREFIX = "STREAMFS_"


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "streamfs"


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Where the services are and where streamfs keeps its files.

    ``None`` for a service address means "not configured": the services manager
    may start one and publish its address.
    """

    kafka_bootstrap: str | None = None
    redis_url: str | None = None
    schema_registry_url: str | None = None
    cache_dir: Path = dataclasses.field(default_factory=_default_cache_dir)
    run_dir: Path | None = None
    kafka_heap_mb: int = 512
    java_home: str | None = None  # JAVA_HOME: the JDK that runs the local Kafka
    log_level: str = "info"
    registry_topic: str = REGISTRY_TOPIC  # the feature registry's compacted Kafka topic
    # Separates deployments (or tests) sharing one Redis: part of every online key.
    namespace: str = "default"
    # The offline Parquet log: a local path or a pyarrow filesystem URI (s3://...).
    offline_root: str | None = None
    # When the offline log writer closes a file (streamfs.offline.rolling), and the size
    # `streamfs offline compact` merges up to; whether the worker logs feature snapshots.
    offline_roll_mb: int = 64
    offline_roll_interval_s: int = 600
    offline_compact_mb: int = 256
    offline_snapshots: bool = True

    @property
    def resolved_run_dir(self) -> Path:
        return self.run_dir if self.run_dir is not None else self.cache_dir / "run"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from ``STREAMFS_*`` variables; unset ones keep their defaults."""

        def get(name: str) -> str | None:
            value = environ.get(ENV_PREFIX + name)
            return value if value else None

        kwargs: dict[str, object] = {
            "kafka_bootstrap": get("KAFKA_BOOTSTRAP"),
            "redis_url": get("REDIS_URL"),
            "schema_registry_url": get("SCHEMA_REGISTRY_URL"),
        }
        if (cache := get("CACHE_DIR")) is not None:
            kwargs["cache_dir"] = Path(cache).expanduser()
        if (run := get("RUN_DIR")) is not None:
            kwargs["run_dir"] = Path(run).expanduser()
        if (heap := get("KAFKA_HEAP_MB")) is not None:
            try:
                kwargs["kafka_heap_mb"] = int(heap)
            except ValueError as exc:
                raise ConfigError(
                    f"{ENV_PREFIX}KAFKA_HEAP_MB must be a whole number of MB, got {heap!r}"
                ) from exc
        if environ.get("JAVA_HOME"):
            kwargs["java_home"] = environ["JAVA_HOME"]
        if (offline_root := get("OFFLINE_ROOT")) is not None:
            kwargs["offline_root"] = offline_root
        for name in ("OFFLINE_ROLL_MB", "OFFLINE_ROLL_INTERVAL_S", "OFFLINE_COMPACT_MB"):
            if (number := get(name)) is not None:
                try:
                    value = int(number)
                except ValueError as exc:
                    raise ConfigError(
                        f"{ENV_PREFIX}{name} must be a whole number, got {number!r}"
                    ) from exc
                if value < 1:
                    raise ConfigError(f"{ENV_PREFIX}{name} must be at least 1, got {number!r}")
                kwargs[name.lower()] = value
        if (snapshots := get("OFFLINE_SNAPSHOTS")) is not None:
            if snapshots.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ConfigError(
                    f"{ENV_PREFIX}OFFLINE_SNAPSHOTS must be true or false, got {snapshots!r}"
                )
            kwargs["offline_snapshots"] = snapshots.lower() in ("1", "true", "yes", "on")
        if (namespace := get("NAMESPACE")) is not None:
            kwargs["namespace"] = namespace
        if (level := get("LOG_LEVEL")) is not None:
            kwargs["log_level"] = level.lower()
        if (topic := get("REGISTRY_TOPIC")) is not None:
            kwargs["registry_topic"] = topic
        return cls(**kwargs)  # type: ignore[arg-type]  # keys above match the fields

    def with_addresses(self, addresses: Mapping[str, str]) -> Settings:
        """A copy with service addresses filled in from published ``STREAMFS_*`` variables."""
        return dataclasses.replace(
            self,
            kafka_bootstrap=addresses.get(ENV_PREFIX + "KAFKA_BOOTSTRAP", self.kafka_bootstrap),
            redis_url=addresses.get(ENV_PREFIX + "REDIS_URL", self.redis_url),
            schema_registry_url=addresses.get(
                ENV_PREFIX + "SCHEMA_REGISTRY_URL", self.schema_registry_url
            ),
        )
