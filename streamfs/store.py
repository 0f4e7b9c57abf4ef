"""``FeatureStore``: the Python entry point (the SDK edge), over the registry for now.

``FeatureStore()`` reads its settings from ``STREAMFS_*`` variables once, here;
pass a :class:`Settings` (or a registry backend, for tests) to choose explicitly.
Calls are synchronous, so a notebook or script uses them directly; each runs the
registry's asyncio client to completion (on a helper thread when the caller is
already inside an event loop, as in Jupyter). Each call reads the registry anew,
so it sees what other writers applied.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import getpass
import json
import math
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from streamfs.definitions import FeatureView
from streamfs.definitions.features import Duration
from streamfs.errors import ConfigError
from streamfs.online import OnlineRow, Selection, ValueCache, ViewLayout, read_online
from streamfs.registry.backend import Backend
from streamfs.registry.plan import Plan, Topology, plan_apply, plan_register, plan_retire
from streamfs.registry.records import RegistryError
from streamfs.registry.register import view_from_sql
from streamfs.registry.state import FeatureInfo, FeatureVersion, Lineage, RegistryState
from streamfs.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FeatureDetails:
    """One feature: its current definition, every version of its meaning, its lineage."""

    info: FeatureInfo
    versions: tuple[FeatureVersion, ...]
    lineage: Lineage


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # inside a loop (Jupyter)
        return pool.submit(asyncio.run, coroutine).result()


class FeatureStore:
    """Register, list and inspect features; apply topologies (see the module docstring)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        backend: Backend | Callable[[], Backend] | None = None,
        who: str | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.settings = Settings.from_env(os.environ) if settings is None else settings
        self._backend = backend
        self._who = who if who is not None else getpass.getuser()
        self._clock = clock if clock is not None else (lambda: time.time_ns() // 1_000_000)
        self._layouts: dict[str, ViewLayout] | None = None
        self._layouts_state: RegistryState | None = None  # what they were built from
        self._layouts_at = 0.0
        self.layouts_ttl_s = 30.0  # how stale the cached view definitions may get
        self._redis_client: Any = None
        self._value_cache = ValueCache()  # hot entities are not decoded on every read
        # Feature lists resolved against the cached layouts (they go with them).
        self._selections: dict[tuple[str, ...], tuple[dict[str, ViewLayout], Selection]] = {}

    def _open(self) -> Backend:
        if self._backend is None:
            if not self.settings.kafka_bootstrap:
                raise ConfigError(
                    "no Kafka for the registry: set STREAMFS_KAFKA_BOOTSTRAP or run"
                    " `streamfs services up`"
                )
            from streamfs.registry.kafka import KafkaBackend

            return KafkaBackend(self.settings.kafka_bootstrap, self.settings.registry_topic)
        return self._backend() if callable(self._backend) else self._backend

    def _read(self, use: Callable[[RegistryState], T]) -> T:
        async def run() -> T:
            backend = self._open()
            try:
                return use(await backend.load())
            finally:
                await backend.close()

        return _run(run())

    def _commit(self, make: Callable[[RegistryState], Plan]) -> Plan:
        async def run() -> Plan:
            backend = self._open()
            try:
                return await backend.commit(make)
            finally:
                await backend.close()

        plan = _run(run())
        self._layouts_at = -math.inf  # this store reads what it registered from now on
        return plan

    # --- registration ------------------------------------------------------------------

    def apply(
        self, topology: Topology | Path | str | Iterable[object], dry_run: bool = False
    ) -> Plan:
        """Make the registry hold ``topology`` (a :class:`Topology`, a directory of
        definitions, or the definition objects); returns the plan, applied unless ``dry_run``."""
        wanted = _topology(topology)
        if dry_run:
            return self._read(lambda state: plan_apply(state, wanted, self._who, self._clock()))
        return self._commit(lambda state: plan_apply(state, wanted, self._who, self._clock()))

    def register_feature(
        self,
        name: str,
        description: str,
        data_type: str,
        transformation: str,
        *,
        entity: str | None = None,
        hop: Duration | None = None,
        owner: str = "",
    ) -> FeatureInfo:
        """Register one feature from SQL, e.g.
        ``COUNT(*) FROM purchases WHERE created_at >= NOW() - INTERVAL '7 days'``
        (the forms :mod:`streamfs.definitions.sql` accepts). The same call again changes
        nothing; a changed meaning makes a new version."""

        def make(state: RegistryState) -> Plan:
            view = view_from_sql(
                state, name, description, data_type, transformation,
                entity=entity, hop=hop, owner=owner or self._who,
            )  # fmt: skip
            return plan_register(state, view, {name: transformation}, self._who, self._clock())

        self._commit(make)
        return self.get_feature(name).info

    def retire(self, view: str, version: int) -> Plan:
        """Stop serving an old version of a view (its records stay readable)."""
        return self._commit(
            lambda state: plan_retire(state, view, version, self._who, self._clock())
        )

    # --- reading -----------------------------------------------------------------------

    def list_features(self) -> list[FeatureInfo]:
        """Every registered feature, by name."""
        return self._read(lambda state: sorted(state.features().values(), key=lambda f: f.name))

    def get_feature(self, name: str) -> FeatureDetails:
        """A feature's definition, versions and lineage; :class:`RegistryError` if unknown."""

        def details(state: RegistryState) -> FeatureDetails:
            info = state.features().get(name)
            if info is None:
                raise RegistryError(f"feature {name!r} is not registered")
            return FeatureDetails(info, tuple(state.feature_history(name)), state.lineage(name))

        return self._read(details)

    def get_feature_view(self, name: str, version: int | None = None) -> FeatureView:
        """A feature view as registered (the latest version unless ``version``)."""
        return self._read(lambda state: state.view(name, version))

    def registry_state(self) -> RegistryState:
        """Everything registered, for tools that need more than the calls above."""
        return self._read(lambda state: state)

    # --- online ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the served views from the registry (reads use a cached copy). A view
        whose definition did not change keeps its layout object, and with it the values
        cached for it."""
        from streamfs.plans import reader_layouts

        state = self.registry_state()
        layouts = reader_layouts(state)
        if self._layouts is not None and self._layouts_state is not None:
            keep_unchanged_layouts(self._layouts_state, self._layouts, state, layouts)
        self._layouts, self._layouts_state = layouts, state
        self._layouts_at = time.monotonic()

    def _reader_layouts(self) -> dict[str, ViewLayout]:
        if self._layouts is None or time.monotonic() - self._layouts_at > self.layouts_ttl_s:
            self.refresh()
        assert self._layouts is not None
        return self._layouts

    def _redis(self) -> Any:
        if self._redis_client is None:
            if not self.settings.redis_url:
                raise ConfigError(
                    "no Redis to read features from: set STREAMFS_REDIS_URL or run"
                    " `streamfs services up`"
                )
            from streamfs.serving.redisreads import BlockingRedisReads

            url = self.settings.redis_url
            if BlockingRedisReads.supports(url):
                self._redis_client = BlockingRedisReads(url)
            else:  # TLS: redis-py speaks it
                import redis

                self._redis_client = redis.Redis.from_url(url)
        return self._redis_client

    def get_online_features(
        self,
        entity_keys: str | int | Sequence[str | int],
        features: Sequence[str],
        at_ms: int | None = None,
    ) -> OnlineRow | list[OnlineRow]:
        """Features of one entity (an :class:`OnlineRow`) or of many (a list, in order), exact
        at ``at_ms`` (default: now) by the window rule, in one Redis round trip.

        ``features`` are ``view:feature`` or names unique across views; unknown names raise
        :class:`~streamfs.online.UnknownFeatureError` naming them. An unknown entity gets
        empty values (count 0, others None) and no last event time.
        """
        at = self._clock() if at_ms is None else at_ms
        layouts, namespace = self._reader_layouts(), self.settings.namespace
        selection = self._selection(layouts, features)
        if isinstance(entity_keys, str | int):
            keys: Sequence[str | int] = [entity_keys]
            return read_online(
                self._redis(), layouts, keys, selection, at, namespace, self._value_cache
            )[0]
        return read_online(
            self._redis(), layouts, entity_keys, selection, at, namespace, self._value_cache
        )

    def _selection(self, layouts: dict[str, ViewLayout], features: Sequence[str]) -> Selection:
        key = tuple(features)
        known = self._selections.get(key)
        if known is not None and known[0] is layouts:
            return known[1]
        selection = Selection.of(layouts, key)  # unknown names raise, every time
        if len(self._selections) >= 1_024:
            self._selections.clear()
        self._selections[key] = (layouts, selection)
        return selection

    read_online = get_online_features

    # --- ingestion ---------------------------------------------------------------------

    def push(self, source: str, events: Sequence[Mapping[str, Any]]) -> int:
        """Check ``events`` (JSON-like records) against the source's reader schema and
        produce them, Avro-encoded, to its topic; returns how many were sent.

        The batch is checked whole first (:func:`streamfs.push.check_events`): one bad
        event raises :class:`~streamfs.push.PushRejectedError` listing every problem,
        and nothing is sent. An unknown source raises
        :class:`~streamfs.push.UnknownSourceError`. The same checks as ``POST /v1/push``.
        """
        from streamfs.push import Pusher, registered_source

        found = self._read(lambda state: registered_source(state, source))
        pusher = Pusher(
            self.settings.kafka_bootstrap, self.settings.schema_registry_url, self._clock
        )
        pusher.check(found, events)  # before any connection is opened

        async def run() -> int:
            try:
                return await pusher.push(found, events)
            finally:
                await pusher.close()

        return _run(run())

    # --- offline -----------------------------------------------------------------------

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str],
        *,
        timestamp_column: str = "event_timestamp",
        offline_root: str | None = None,
    ) -> Any:
        """``entity_df`` (a pandas DataFrame or pyarrow Table of entity keys and timestamps)
        with each feature valued at each row's timestamp by the window rule, computed with
        DuckDB from the offline log; the same type back, one row per input row, in order.

        ``features`` are named as for :meth:`get_online_features`. See
        :mod:`streamfs.offline.retrieval`.
        """
        from streamfs.offline.retrieval import get_historical_features
        from streamfs.plans import newest_views

        views = newest_views(self.registry_state())
        root = offline_root if offline_root is not None else default_offline_root(self.settings)
        return get_historical_features(
            entity_df, features, views, root, timestamp_column=timestamp_column
        )


def keep_unchanged_layouts(
    old_state: RegistryState,
    old_layouts: Mapping[str, ViewLayout],
    state: RegistryState,
    layouts: dict[str, ViewLayout],
) -> None:
    """Put back into ``layouts`` (built from ``state``) the old layout object of each view
    whose served definition is the same record as in ``old_state``.

    Readers' value caches trust only the very layout object they computed with (see
    :class:`~streamfs.online.ValueCache`); a reload that changed nothing must not make
    every entity decode again.
    """
    for name, layout in layouts.items():
        old = old_layouts.get(name)
        if old is not None and _definition(old_state, old) == _definition(state, layout):
            layouts[name] = old


def _definition(state: RegistryState, layout: ViewLayout) -> tuple[int, int, str] | None:
    """What a reader layout is built from: the newest record of its state version."""
    records = [
        r
        for r in state.history("view", layout.name)
        if not r.removed and r.state_version == layout.version
    ]
    if not records:
        return None
    return layout.version, records[-1].version, json.dumps(records[-1].spec, sort_keys=True)


def default_offline_root(settings: Settings) -> str:
    """Where the offline log lives: ``STREAMFS_OFFLINE_ROOT``, else ``{cache_dir}/offline``."""
    if settings.offline_root:
        return settings.offline_root
    return str(settings.cache_dir / "offline")


def _topology(topology: Topology | Path | str | Iterable[object]) -> Topology:
    if isinstance(topology, Topology):
        return topology
    if isinstance(topology, str | Path):
        from streamfs.registry.topology import load_topology

        return load_topology(Path(topology))
    return Topology.of(topology)
