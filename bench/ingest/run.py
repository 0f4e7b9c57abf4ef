"""Ingest throughput: one ``streamfs worker`` draining a backlog, against the ceiling and a peer.

Pre-produces ``--events`` purchase events over ``--entities`` users on a fresh
``--partitions``-partition topic (pre-encoded with streamfs's Encoder, sent in
per-partition batches with aiokafka; event times spread over the last ``--span-min``
minutes, increasing), registers a bench view with the sample topology's purchase
aggregations (``--features sample``: all 19 of ``user_purchases``; ``basic``: its
count/sum/mean/stddev over 1h/24h/7d/30d) in a private registry topic, then measures
on that topic, in this order:

- ``bare``: aiokafka ``getmany`` + fastavro ``schemaless_reader`` (the Python ceiling);
- ``streamfs``: ``streamfs worker`` as a subprocess, from its start until its consumer
  group's committed offsets reach the end of every partition and Redis holds each
  partition's last event (the sinks flushed); peak RSS (the worker and its offline
  writer child, summed) and CPU time from ``/proc``;
- ``quixstreams``: ``bench/ingest/quix_app.py`` in its own virtualenv (``--quix-python``),
  from start until its group's committed offsets reach the end.

Every name (topic, registry topic, consumer groups, Redis namespace, state dirs) is
private to the run. Needs the services: ``eval "$(.venv/bin/streamfs services env)"``.

    python3 -m venv bench/.venv-quix && bench/.venv-quix/bin/pip install quixstreams fastavro
    .venv/bin/python -m bench.ingest.run                       # 1,000,000 over 100,000
    .venv/bin/python -m bench.ingest.run --events 200000 --entities 20000 --skip quix
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "avro_schemas" / "purchase.avsc"
VIEW_NAME = "bench_purchases"
KEY_FIELD = "user_id"


@dataclasses.dataclass
class Names:
    run: str
    topic: str
    registry_topic: str
    namespace: str
    worker_group: str
    quix_group: str
    work_dir: Path

    @classmethod
    def fresh(cls) -> Names:
        run = uuid.uuid4().hex[:8]
        return cls(
            run=run,
            topic=f"bench-purchase-{run}",
            registry_topic=f"bench-registry-{run}",
            namespace=f"bench-{run}",
            worker_group=f"bench-worker-{run}",
            quix_group=f"bench-quix-{run}",
            work_dir=Path(tempfile.mkdtemp(prefix=f"streamfs-bench-{run}-")),
        )

    def worker_env(self) -> dict[str, str]:
        """The environment for this run's ``streamfs worker``: its registry topic and
        Redis namespace, and an offline log of its own (runs neither share files nor
        take each other's as replays)."""
        return {
            **os.environ,
            "STREAMFS_REGISTRY_TOPIC": self.registry_topic,
            "STREAMFS_NAMESPACE": self.namespace,
            "STREAMFS_OFFLINE_ROOT": str(self.work_dir / "offline"),
        }


@dataclasses.dataclass
class Result:
    name: str
    events: int
    seconds: float
    steady_seconds: float | None = None
    peak_rss_mb: float | None = None
    cpu_seconds: float | None = None  # the process's user + system time, threads included
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds


# --- setup ------------------------------------------------------------------------------


def bench_view(topic: str, features: str) -> Any:
    """The sample topology's ``user_purchases`` features (all or the basic ones) on ``topic``."""
    sys.path.insert(0, str(ROOT))
    from streamfs.definitions import FeatureView
    from streamfs.schemas.codec import value_subject
    from topology.entities import user
    from topology.sources import purchases
    from topology.user_features import purchase_features

    chosen = purchase_features
    if features == "basic":
        basic = ("count", "sum", "mean", "stddev")
        chosen = [f for f in purchase_features if getattr(f, "function", None) in basic]
    source = dataclasses.replace(purchases, topic=topic, schema_subject=value_subject(topic))
    return FeatureView(name=VIEW_NAME, entity=user, source=source, features=tuple(chosen))


def make_events(
    count: int, entities: int, span_ms: int, seed: int = 7
) -> list[tuple[bytes, dict[str, Any]]]:
    """``(key, record)`` pairs; event times rise evenly over the ``span_ms`` before now."""
    from streamfs.schemas.sample import ShopEvents

    start = time.time_ns() // 1_000_000 - span_ms
    tick = iter(range(count))
    shop = ShopEvents(
        seed=seed, entities=entities, clock=lambda: start + next(tick) * span_ms // count
    )
    return [(r[KEY_FIELD].encode(), r) for r in shop.events("purchase", count)]


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def delete_run_topics(bootstrap: str, run: str) -> list[str]:
    """Delete the topics of run ``run``: its events, its registry, the worker's and
    quixstreams' changelogs and internal topics all carry the run's id. Left in place,
    repeated runs fill the broker's disk (the changelogs hold every entity's tiles)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if run in t)
        if topics:
            await admin.delete_topics(topics)
        return topics
    finally:
        await admin.close()


def clean_up(bootstrap: str, names: Names) -> None:
    """The run's topics and work directory, gone; a failure to delete is reported only."""
    try:
        topics = asyncio.run(delete_run_topics(bootstrap, names.run))
        _say(f"deleted {len(topics)} topics of run {names.run}")
    except Exception as exc:  # the figures are printed: a leftover topic is no failure
        _say(f"could not delete the topics of run {names.run}: {exc!r}")
    shutil.rmtree(names.work_dir, ignore_errors=True)


async def produce(
    bootstrap: str,
    registry_url: str,
    topic: str,
    partitions: int,
    events: Sequence[tuple[bytes, dict[str, Any]]],
) -> dict[int, tuple[int, bytes]]:
    """Send every event (Kafka's default key partitioning); per partition its last
    ``(offset, key)``."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import murmur2

    from streamfs.schemas.client import connect
    from streamfs.schemas.codec import Encoder, value_subject

    async with connect(registry_url) as registry:
        encoder = await Encoder.registered(
            registry, value_subject(topic), SCHEMA_PATH.read_text(encoding="utf-8")
        )
    values = encoder.encode_batch(r for _, r in events)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20
    )
    await producer.start()
    last: dict[int, tuple[int, bytes]] = {}
    try:
        batches: dict[int, Any] = {}
        pending: list[asyncio.Future[Any]] = []
        keys: dict[int, bytes] = {}

        async def flush(partition: int) -> None:
            batch = batches.pop(partition)
            future = await producer.send_batch(batch, topic, partition=partition)
            key = keys[partition]
            future.add_done_callback(
                lambda f, p=partition, k=key: _note_last(last, p, f.result().offset, batch, k)
            )
            pending.append(future)

        for (key, _), value in zip(events, values, strict=True):
            partition = (murmur2(key) & 0x7FFFFFFF) % partitions
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                await flush(partition)
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            keys[partition] = key
            if len(pending) > 64:
                await asyncio.gather(*pending)
                pending.clear()
        for partition in list(batches):
            await flush(partition)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return last


def _note_last(
    last: dict[int, tuple[int, bytes]], partition: int, base: int, batch: Any, key: bytes
) -> None:
    offset = base + batch.record_count() - 1
    if partition not in last or last[partition][0] < offset:
        last[partition] = (offset, key)


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not parts:
            await consumer._client.force_metadata_update()
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(parts)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets on ``topic``; none while a fresh broker has no
    group coordinator yet (its offsets topic is made with the first group)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import GroupCoordinatorNotAvailableError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        except GroupCoordinatorNotAvailableError:
            return {}
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
    finally:
        await admin.close()


# --- measurements -----------------------------------------------------------------------


async def bare_loop(bootstrap: str, topic: str, ends: dict[int, int]) -> Result:
    """aiokafka getmany + fastavro schemaless_reader: what a Python consumer can reach."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from fastavro import parse_schema, schemaless_reader

    raw = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    for field in raw["fields"]:  # timestamps as int ms, as streamfs decodes them
        if isinstance(field["type"], dict):
            field["type"] = field["type"]["type"]
    schema = parse_schema(raw)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4 << 20
    )
    await consumer.start()
    total = sum(ends.values())
    seen = 0
    amount = 0.0
    started = time.perf_counter()
    try:
        parts = [TopicPartition(topic, p) for p in ends]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1_000, max_records=10_000)
            for records in batch.values():
                for record in records:
                    value: Any = schemaless_reader(io.BytesIO(record.value[5:]), schema, None)
                    amount += value["amount"]
                seen += len(records)
    finally:
        elapsed = time.perf_counter() - started
        await consumer.stop()
    return Result("bare aiokafka + fastavro", seen, elapsed)


class RssWatch:
    """Polls a process and its children (the worker's offline writer) while they run:
    the peak of their summed RSS (at least the process's own VmHWM) and their CPU time."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self.cpu_by_pid: dict[int, float] = {}

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_by_pid.values())

    def poll(self) -> None:
        total_kb = 0
        for pid in [self.pid, *_children(self.pid)]:
            try:
                text = Path(f"/proc/{pid}/status").read_text()
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                elif line.startswith("VmHWM:") and pid == self.pid:
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            # Fields 14 and 15 (utime, stime) in clock ticks, after the parenthesised name.
            fields = stat.rpartition(")")[2].split()
            ticks = int(fields[11]) + int(fields[12])
            self.cpu_by_pid[pid] = ticks / os.sysconf("SC_CLK_TCK")
        self.peak_kb = max(self.peak_kb, total_kb)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


async def drain(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    log: Path,
    bootstrap: str,
    group: str,
    topic: str,
    ends: dict[int, int],
    flushed: Callable[[], bool],
    timeout_s: float,
) -> Result:
    """Start ``cmd``; time it until ``group`` committed every end offset and ``flushed()``."""
    total = sum(ends.values())
    started = time.perf_counter()
    with log.open("wb") as out:
        # Blocks for the fork only (milliseconds); the polling below is what is timed.
        proc = subprocess.Popen(  # noqa: ASYNC220
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
    watch = RssWatch(proc.pid)
    first_progress: tuple[float, int] | None = None
    try:
        while True:
            watch.poll()
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}; see {log}")
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"{name} did not finish in {timeout_s} s; see {log}")
            done = await committed(bootstrap, group, topic)
            now = time.perf_counter()
            progress = sum(max(0, done.get(p, 0)) for p in ends)
            if first_progress is None and progress > 0:
                first_progress = (now, progress)
            if all(done.get(p, -1) >= end for p, end in ends.items()) and flushed():
                break
            await asyncio.sleep(0.2)
        elapsed = now - started
        watch.poll()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    steady = None
    if first_progress is not None and elapsed > first_progress[0] - started:
        steady = (total - first_progress[1]) / (now - first_progress[0])
    return Result(
        name,
        total,
        elapsed,
        steady_seconds=None if steady is None else total / steady,
        peak_rss_mb=watch.peak_kb / 1024,
        cpu_seconds=watch.cpu_s,
    )


def redis_flushed(
    redis_url: str, namespace: str, last: dict[int, tuple[int, bytes]]
) -> Callable[[], bool]:
    """True once Redis holds, for every partition, its last event's entity at that offset."""
    import redis

    from streamfs.online import online_key

    client = redis.Redis.from_url(redis_url)

    def check() -> bool:
        for offset, key in last.values():
            stored = client.hget(online_key(VIEW_NAME, 1, key.decode(), namespace), "o")
            if stored is None or int(stored) < offset:
                return False
        return True

    return check


# --- main -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--span-min", type=int, default=50, help="event times spread over this")
    parser.add_argument("--features", choices=["sample", "basic"], default="sample")
    parser.add_argument("--batch-size", type=int, default=None, help="worker --batch-size")
    parser.add_argument("--cache-entities", type=int, default=None, help="worker --cache-entities")
    parser.add_argument("--gc-interval", type=float, default=None, help="worker --gc-interval")
    parser.add_argument("--skip", nargs="*", default=[], choices=["bare", "streamfs", "quix"])
    parser.add_argument(
        "--quix-python",
        default=str(ROOT / "bench" / ".venv-quix" / "bin" / "python"),
        help="a virtualenv with quixstreams (not the project's)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="per measurement, s")
    parser.add_argument("--keep", action="store_true", help="keep the state dirs and topics")
    args = parser.parse_args(argv)

    from streamfs.settings import Settings
    from streamfs.store import FeatureStore

    settings = Settings.from_env(os.environ)
    bootstrap, redis_url, registry_url = (
        settings.kafka_bootstrap,
        settings.redis_url,
        settings.schema_registry_url,
    )
    if not (bootstrap and redis_url and registry_url):
        print('run: eval "$(.venv/bin/streamfs services env)"', file=sys.stderr)
        return 2
    if "quix" not in args.skip and not Path(args.quix_python).exists():
        # Said before the runs, not after the worker's minutes.
        print(
            f"no quixstreams Python at {args.quix_python}: run `python3 -m venv bench/.venv-quix"
            " && bench/.venv-quix/bin/pip install quixstreams fastavro`, pass"
            " --quix-python, or --skip quix",
            file=sys.stderr,
        )
        return 2
    names = Names.fresh()
    say = _say
    say(f"run {names.run}: topic {names.topic}, work dir {names.work_dir}")

    view = bench_view(names.topic, args.features)
    store = FeatureStore(dataclasses.replace(settings, registry_topic=names.registry_topic))
    store.apply([view])
    say(f"registered {VIEW_NAME}: {len(view.features)} aggregations")

    t0 = time.perf_counter()
    events = make_events(args.events, args.entities, args.span_min * 60_000)
    say(f"generated {len(events):,} events in {time.perf_counter() - t0:.1f} s")
    asyncio.run(create_topic(bootstrap, names.topic, args.partitions))
    t0 = time.perf_counter()
    last = asyncio.run(produce(bootstrap, registry_url, names.topic, args.partitions, events))
    produce_s = time.perf_counter() - t0
    del events
    ends = asyncio.run(end_offsets(bootstrap, names.topic))
    say(f"produced {sum(ends.values()):,} in {produce_s:.1f} s; ends {ends}")

    results: list[Result] = []
    if "bare" not in args.skip:
        results.append(asyncio.run(bare_loop(bootstrap, names.topic, ends)))
        say(_row(results[-1]))
    if "streamfs" not in args.skip:
        env = names.worker_env()
        cmd = [
            str(ROOT / ".venv" / "bin" / "streamfs"),
            "worker",
            "--name",
            f"bench-{names.run}",
            "--data-dir",
            str(names.work_dir / "worker"),
            "--app-id",
            names.worker_group,
        ]
        if args.batch_size:
            cmd += ["--batch-size", str(args.batch_size)]
        if args.cache_entities is not None:
            cmd += ["--cache-entities", str(args.cache_entities)]
        if args.gc_interval is not None:
            cmd += ["--gc-interval", str(args.gc_interval)]
        results.append(
            asyncio.run(
                drain(
                    "streamfs worker",
                    cmd,
                    env,
                    names.work_dir / "worker.log",
                    bootstrap,
                    names.worker_group,
                    names.topic,
                    ends,
                    redis_flushed(redis_url, names.namespace, last),
                    args.timeout,
                )
            )
        )
        say(_row(results[-1]))
    if "quix" not in args.skip:
        cmd = [
            args.quix_python,
            str(ROOT / "bench" / "ingest" / "quix_app.py"),
            bootstrap,
            names.topic,
            names.quix_group,
            str(names.work_dir / "quix"),
            str(SCHEMA_PATH),
        ]
        results.append(
            asyncio.run(
                drain(
                    "quixstreams",
                    cmd,
                    dict(os.environ),
                    names.work_dir / "quix.log",
                    bootstrap,
                    names.quix_group,
                    names.topic,
                    ends,
                    lambda: True,
                    args.timeout,
                )
            )
        )
        say(_row(results[-1]))

    from streamfs import native

    print()
    print(
        f"{args.events:,} purchase events, {args.entities:,} entities, {args.partitions}"
        f" partitions, {len(view.features)} aggregations ({args.features});"
        f" {platform.python_implementation()} {platform.python_version()};"
        f" streamfs modules {native.status()}"
    )
    print()
    print(
        "| consumer | events/s (from start) | events/s (after first commit) | s | CPU s"
        " | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        steady = "" if r.steady_seconds is None else f"{r.events / r.steady_seconds:,.0f}"
        rss = "" if r.peak_rss_mb is None else f"{r.peak_rss_mb:,.0f}"
        cpu = "" if r.cpu_seconds is None else f"{r.cpu_seconds:.1f}"
        print(f"| {r.name} | {r.rate:,.0f} | {steady} | {r.seconds:.1f} | {cpu} | {rss} |")
    by_name = {r.name: r for r in results}
    worker = by_name.get("streamfs worker")
    if worker:
        for other in ("bare aiokafka + fastavro", "quixstreams"):
            if other in by_name:
                print(f"streamfs / {other}: {worker.rate / by_name[other].rate:.2f}x")
    if not args.keep:
        clean_up(bootstrap, names)
    return 0


def _row(r: Result) -> str:
    return f"{r.name}: {r.events:,} in {r.seconds:.1f} s = {r.rate:,.0f}/s"


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
