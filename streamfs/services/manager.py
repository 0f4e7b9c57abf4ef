"""``streamfs services up | down | status``: the local services, started once and found again.

Layout of the run directory (``~/.cache/streamfs/run`` unless ``STREAMFS_RUN_DIR``)::

    run/
      env                  export STREAMFS_...=... lines for `eval` or `source`
      lock                 serialises concurrent `up`/`down`
      kafka/state.json     pid, start time, address, log, data dir
      kafka/kafka.log  kafka/data/  kafka/server.properties
      redis/state.json  redis/redis.log  redis/data/
      schema-registry/state.json  schema-registry/schema-registry.log

A service whose ``STREAMFS_*`` address is already set and answers is used as it
is ("external"); nothing is started for it and ``down`` never touches it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from streamfs.errors import ServiceError
from streamfs.services import kafka, process, redis, schema_registry
from streamfs.settings import ENV_PREFIX, Settings

Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    print(f"streamfs: {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    env_var: str
    configured: Callable[[Settings], str | None]
    healthy: Callable[[str], bool]
    start: Callable[[Path, Settings, Progress], process.ProcessState]


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        name="kafka",
        env_var=ENV_PREFIX + "KAFKA_BOOTSTRAP",
        configured=lambda s: s.kafka_bootstrap,
        healthy=kafka.healthy,
        start=lambda d, s, p: kafka.start(d, s.cache_dir, s.java_home, s.kafka_heap_mb, p),
    ),
    ServiceSpec(
        name="redis",
        env_var=ENV_PREFIX + "REDIS_URL",
        configured=lambda s: s.redis_url,
        healthy=redis.healthy,
        start=lambda d, _s, p: redis.start(d, p),
    ),
    ServiceSpec(
        name="schema-registry",
        env_var=ENV_PREFIX + "SCHEMA_REGISTRY_URL",
        configured=lambda s: s.schema_registry_url,
        healthy=schema_registry.healthy,
        start=lambda d, s, p: schema_registry.start(d, s.kafka_bootstrap, p),
    ),
)


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    env_var: str
    address: str | None
    origin: str  # "managed" (started by `up`), "external" (from the environment), "stopped"
    healthy: bool
    pid: int | None = None
    log_file: str | None = None


class ServicesManager:
    """Starts, finds and stops the services under one run directory."""

    def __init__(self, settings: Settings, progress: Progress = stderr_progress) -> None:
        self.settings = settings
        self.run_dir = settings.resolved_run_dir
        self.progress = progress

    @property
    def env_file(self) -> Path:
        return self.run_dir / "env"

    def _state_file(self, spec: ServiceSpec) -> Path:
        return self.run_dir / spec.name / "state.json"

    def _managed(self, spec: ServiceSpec) -> process.ProcessState | None:
        state = process.ProcessState.load(self._state_file(spec))
        if state is not None and process.is_running(state):
            return state
        return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def up(self) -> dict[str, str]:
        """Make every service available; returns the published ``STREAMFS_*`` addresses."""
        with self._locked():
            addresses: dict[str, str] = {}
            for spec in SERVICES:
                # Later services (the registry) find earlier ones (Kafka) through the settings.
                settings = self.settings.with_addresses(addresses)
                addresses[spec.env_var] = self._up_one(spec, settings)
            self._write_env(addresses)
            return addresses

    def _up_one(self, spec: ServiceSpec, settings: Settings) -> str:
        managed = self._managed(spec)
        configured = spec.configured(settings)
        if configured is not None and (managed is None or managed.address != configured):
            if spec.healthy(configured):
                self.progress(f"{spec.name}: using {configured} from {spec.env_var}")
                return configured
            raise ServiceError(
                f"{spec.env_var}={configured} does not answer; start that {spec.name} "
                f"or unset {spec.env_var} to let streamfs start its own"
            )
        if managed is not None:
            if spec.healthy(managed.address):
                self.progress(
                    f"{spec.name}: already running at {managed.address} (pid {managed.pid})"
                )
                return managed.address
            self.progress(f"{spec.name}: pid {managed.pid} is not answering; restarting it")
            process.stop(managed)
        service_dir = self.run_dir / spec.name
        service_dir.mkdir(parents=True, exist_ok=True)
        state = spec.start(service_dir, settings, self.progress)
        state.save(self._state_file(spec))
        self.progress(f"{spec.name}: ready at {state.address} (pid {state.pid})")
        return state.address

    def _write_env(self, addresses: dict[str, str]) -> None:
        tmp = self.env_file.with_suffix(".tmp")
        tmp.write_text(format_exports(addresses))
        tmp.replace(self.env_file)

    def down(self) -> list[str]:
        """Stop what ``up`` started (by pid), wait until it is gone; returns what was stopped."""
        stopped: list[str] = []
        with self._locked():
            # Reverse order: clients of Kafka (the registry, later) go before Kafka.
            for spec in reversed(SERVICES):
                state = process.ProcessState.load(self._state_file(spec))
                if state is None:
                    continue
                if process.stop(state):
                    self.progress(f"{spec.name}: stopped pid {state.pid}")
                    stopped.append(spec.name)
                self._state_file(spec).unlink(missing_ok=True)
            self.env_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> list[ServiceStatus]:
        result = []
        for spec in SERVICES:
            managed = self._managed(spec)
            configured = spec.configured(self.settings)
            if managed is not None and configured in (None, managed.address):
                result.append(
                    ServiceStatus(
                        spec.name,
                        spec.env_var,
                        managed.address,
                        "managed",
                        spec.healthy(managed.address),
                        managed.pid,
                        managed.log_file,
                    )
                )
            elif configured is not None:
                result.append(
                    ServiceStatus(
                        spec.name, spec.env_var, configured, "external", spec.healthy(configured)
                    )
                )
            else:
                result.append(ServiceStatus(spec.name, spec.env_var, None, "stopped", False))
        return result

    def published_addresses(self) -> dict[str, str]:
        """Addresses of the managed services that are running now (for commands run after `up`)."""
        return {
            spec.env_var: state.address
            for spec in SERVICES
            if (state := self._managed(spec)) is not None
        }


def format_exports(addresses: dict[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in addresses.items())
