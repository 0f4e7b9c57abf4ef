"""``streamfs worker``: run a worker process for every feature view in the registry.

Reads the served view versions from the registry, makes sure their source topics
exist, and runs the Faust app of :mod:`streamfs.worker`. Every ``--refresh`` seconds
it reloads the registry: new or changed views on sources it already consumes take
effect with the next batch, without a restart. A view on a new source needs a
worker restart (a Faust app's topics are fixed when it starts); the worker logs
``restart_needed`` naming the source.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from streamfs.cycles import DEFAULT_INTERVAL_S, CycleCollector
from streamfs.errors import ConfigError
from streamfs.settings import Settings

log = structlog.get_logger(__name__)

GC_THRESHOLDS = (50_000, 20, 100)  # CPython's defaults: (700, 10, 10)


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "worker", help="consume the sources of the registered feature views into Redis"
    )
    parser.add_argument("--name", default="worker-1", help="this worker's name (its data dir)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="RocksDB state (default: <cache>/worker/<cluster>/<app id>/<name>)",
    )
    parser.add_argument("--app-id", default=None, help="Faust app id / consumer group")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=10_000,
        help="events a batch takes, give or take a fetched chunk of up to 500 (a partial"
        " batch starts 0.1 s after the previous one)",
    )
    parser.add_argument(
        "--cache-entities",
        type=int,
        default=20_000,
        help="decoded tiles kept in memory per source, about 10 KB an entity for 20 features",
    )
    parser.add_argument(
        "--fetch-min-bytes",
        type=int,
        default=None,
        help="bytes a fetch waits for, at most 0.1 s, before the broker answers: fewer,"
        " fuller fetches (a quiet stream's events wait up to 0.1 s); 1: answered at once"
        " (default: 32 KiB, streamfs.worker.FETCH_MIN_BYTES)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=4,
        help="partitions of a source topic that does not exist yet",
    )
    parser.add_argument(
        "--refresh", type=float, default=5.0, help="seconds between registry reloads"
    )
    parser.add_argument(
        "--loglevel", default="warn", choices=["crit", "error", "warn", "info", "debug"]
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics (ingest counts by topic and reason) on this port; 0: off",
    )
    parser.add_argument("--metrics-host", default="127.0.0.1")
    parser.add_argument(
        "--gc-interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        help="seconds between full collections of reference cycles, which then run only"
        " on this timer (streamfs.cycles: CPython's own schedule took 14%% of a busy"
        " worker's time), in the worker and in its offline writer child; 0: CPython's"
        " automatic collection",
    )
    parser.set_defaults(handler=run)


def _require(settings: Settings) -> tuple[str, str, str]:
    missing = [
        name
        for name, value in (
            ("STREAMFS_KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
            ("STREAMFS_REDIS_URL", settings.redis_url),
            ("STREAMFS_SCHEMA_REGISTRY_URL", settings.schema_registry_url),
        )
        if not value
    ]
    if missing or not (
        settings.kafka_bootstrap and settings.redis_url and settings.schema_registry_url
    ):
        raise ConfigError(f"the worker needs {', '.join(missing)} (or `streamfs services up`)")
    return settings.kafka_bootstrap, settings.redis_url, settings.schema_registry_url


async def ensure_topics(
    bootstrap: str, topics: Sequence[str], partitions: int
) -> tuple[str, dict[str, int]]:
    """The cluster id, and each topic's partition count (creating missing topics)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        existing = set(await consumer.topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
                await admin.create_topics([NewTopic(t, partitions, 1) for t in missing])
            log.info("topics_created", topics=missing, partitions=partitions)
        await consumer._client.force_metadata_update()  # see the new topics
        cluster_id = str((await admin.describe_cluster()).get("cluster_id") or "unknown")
        return cluster_id, {t: len(consumer.partitions_for_topic(t) or ()) for t in topics}
    finally:
        await consumer.stop()
        await admin.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from streamfs import names
    from streamfs.engine import PartitionEngine, ViewPlan
    from streamfs.ingest import Validator
    from streamfs.metrics import default_ingest_metrics
    from streamfs.offline.log import roll_policy
    from streamfs.offline.process import OfflineProcess
    from streamfs.plans import ServedView, served_views, view_plan
    from streamfs.schemas.client import connect
    from streamfs.schemas.codec import Decoder
    from streamfs.store import FeatureStore, default_offline_root
    from streamfs.worker import FETCH_MIN_BYTES, WorkerOptions, build_app, wall_clock_ms

    if args.batch_size < 1 or args.cache_entities < 0 or args.gc_interval < 0:
        raise ConfigError(
            f"--batch-size must be at least 1, --cache-entities and --gc-interval at least 0,"
            f" got {args.batch_size}, {args.cache_entities} and {args.gc_interval}"
        )
    fetch_min_bytes = FETCH_MIN_BYTES if args.fetch_min_bytes is None else args.fetch_min_bytes
    if fetch_min_bytes < 1:
        raise ConfigError(f"--fetch-min-bytes must be at least 1, got {fetch_min_bytes}")
    bootstrap, redis_url, registry_url = _require(settings)
    # The worker holds tens of thousands of entities' decoded tiles (lists and dicts the
    # cyclic collector tracks), none of them in cycles: by default the collector runs on a
    # timer only (streamfs.cycles). With --gc-interval 0 CPython's schedule runs, young
    # generations less often than its defaults: at those a full collection ran about
    # every 2 s while the tile cache grew, 135-335 ms each, freeing next to nothing.
    cycles = CycleCollector(args.gc_interval) if args.gc_interval else None
    if cycles is None:
        gc.set_threshold(*GC_THRESHOLDS)
    else:
        cycles.install()
    from streamfs import native

    # "compiled", or why the per-event modules run as plain Python (streamfs.native).
    log.info("engine_modules", status=native.status())
    store = FeatureStore(settings)
    snapshots = settings.offline_snapshots
    plans = [view_plan(s, snapshots) for s in served_views(store.registry_state())]
    if not plans:
        raise ConfigError("no feature views are registered: run `streamfs apply topology/` first")
    sources = {p.source.name: p.source for p in plans}
    cluster_id, partitions = asyncio.run(
        ensure_topics(bootstrap, [s.topic for s in sources.values()], args.partitions)
    )
    app_id = args.app_id or names.worker_app_id()
    # Local state belongs to one cluster's changelogs: a worker pointed at another Kafka
    # (a new dev broker, say) must not find state that cluster never saw.
    default_dir = settings.cache_dir / "worker" / cluster_id / app_id / args.name
    options = WorkerOptions(
        app_id=app_id,
        kafka_bootstrap=bootstrap,
        redis_url=redis_url,
        data_dir=args.data_dir or default_dir,
        batch_size=args.batch_size,
        offline_root=default_offline_root(settings),
        fetch_min_bytes=fetch_min_bytes,
    )

    def make_engine(source_plans: Sequence[ViewPlan]) -> PartitionEngine:
        source = source_plans[0].source
        decoder = Decoder(connect(registry_url), source.reader_schema)
        validator = Validator(source, decoder, wall_clock_ms, default_ingest_metrics())
        return PartitionEngine(
            source,
            source_plans,
            validator,
            wall_clock_ms,
            namespace=settings.namespace,
            cache_entities=args.cache_entities,
        )

    options.data_dir.mkdir(parents=True, exist_ok=True)
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_host)
    # The offline log is written by a child process, beside the batches (streamfs.offline.process).
    offline = (
        OfflineProcess(
            options.offline_root, policy=roll_policy(settings), gc_interval_s=args.gc_interval
        )
        if options.offline_root
        else None
    )
    app, runtimes = build_app(
        options, plans, make_engine, lambda topic: partitions[topic], offline_sink=offline
    )

    @app.timer(args.refresh)  # type: ignore[untyped-decorator]  # faust ships no types
    async def refresh_views() -> None:
        # The registry read blocks on Kafka; keep it off the event loop.
        state = await asyncio.to_thread(store.registry_state)
        by_source: dict[str, list[ServedView]] = {}
        for served in served_views(state):
            by_source.setdefault(served.view.source.name, []).append(served)
        for runtime in runtimes:
            wanted = by_source.pop(runtime.engine.source.name, [])
            current = [(p.view.name, p.view.version) for p in runtime.engine.views]
            if [(s.view.name, s.state_version) for s in wanted] != current:
                # Compiled only on a change: compiling every view and its snapshot
                # schema each refresh took about 2% of a busy worker's thread (py-spy).
                runtime.engine.set_views([view_plan(s, snapshots) for s in wanted])
                log.info(
                    "views_changed",
                    source=runtime.engine.source.name,
                    views=[f"{s.view.name}@{s.state_version}" for s in wanted],
                )
        for source in by_source:
            log.warning("restart_needed", source=source, reason="a view reads a new source")

    if cycles is not None:

        @app.timer(cycles.interval_s)  # type: ignore[untyped-decorator]  # faust ships no types
        async def collect_cycles() -> None:
            cycles.collect()

    logging.getLogger("faust").setLevel(
        args.loglevel.upper().replace("CRIT", "CRITICAL").replace("WARN", "WARNING")
    )
    worker = faust.Worker(app, loglevel=args.loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0
