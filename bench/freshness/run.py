"""Freshness: from produce to the value visible through ``read_online``, at a steady rate.

Starts ``streamfs worker`` (a subprocess) on a fresh ``--partitions``-partition topic
with the bench view of :mod:`bench.ingest.run` in a private registry topic and Redis
namespace, then produces purchase events at ``--rate`` per second for ``--seconds``
(event times: the wall clock at sending; users drawn from ``--entities``). Every
``1 / --probes-per-s`` seconds one of those events is a *probe*: a purchase of a
user never seen before (``probe-<run>-<n>``). A thread polls
:meth:`FeatureStore.get_online_features` for the pending probes every
``--poll-ms``; a probe is visible when its ``purchase_count_1h`` reads 1. Its
latency is that moment minus the moment just before the producer was handed the
event (so it includes the producer's linger and the broker's ack path). It also prints
the CPU each process used while producing (the worker, its offline child, this bench),
in cores: on a shared machine a steadier figure than a single run's latencies; and
the latencies per 10 s of the run, which show whether they hold or climb.

    .venv/bin/python -m bench.freshness.run                      # 5,000/s for 60 s
    .venv/bin/python -m bench.freshness.run --rate 2000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from bench.ingest.run import (
    KEY_FIELD,
    ROOT,
    SCHEMA_PATH,
    VIEW_NAME,
    Names,
    RssWatch,
    bench_view,
    clean_up,
)

FEATURE = f"{VIEW_NAME}:purchase_count_1h"


class Prober(threading.Thread):
    """Polls the pending probes through the public read API; records when each shows."""

    def __init__(self, store: Any, poll_s: float) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.poll_s = poll_s
        self.pending: dict[str, float] = {}  # entity -> perf_counter before sending
        self.latencies_ms: list[float] = []
        self.seen: list[tuple[float, float]] = []  # (sent at, latency ms), in seen order
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def add(self, entity: str, sent_at: float) -> None:
        with self.lock:
            self.pending[entity] = sent_at

    def run(self) -> None:
        while not self.stopped.is_set():
            with self.lock:
                keys = list(self.pending)
            if keys:
                rows = self.store.get_online_features(keys, [FEATURE])
                now = time.perf_counter()
                with self.lock:
                    for row in rows:
                        if row.values[FEATURE] == 1:
                            sent_at = self.pending.pop(str(row.entity_key))
                            self.latencies_ms.append((now - sent_at) * 1000)
                            self.seen.append((sent_at, (now - sent_at) * 1000))
            time.sleep(self.poll_s)


def draw(entities: int, count: int) -> list[dict[str, Any]]:
    """``count`` purchase records over ``entities`` users, drawn before the clock starts:
    each one's event time is its offset from the moment it is sent (0, as the sample has
    no disorder), which :func:`produce` adds to the wall clock's reading then."""
    from streamfs.schemas.sample import ShopEvents

    return list(ShopEvents(seed=11, entities=entities, clock=lambda: 0).events("purchase", count))


def produce(
    bootstrap: str,
    registry_url: str,
    topic: str,
    rate: float,
    seconds: float,
    records: list[dict[str, Any]],
    probes_per_s: float,
    run: str,
    prober: Prober | None,
) -> int:
    """Send ``rate`` events/s for ``seconds`` (paced in 10 ms slices); returns how many.

    The load generator shares the machine's two cores with the worker, its offline
    child, Kafka and Redis, so it spends as little CPU per event as it can: ``records``
    come from :func:`draw` (only their event time is set here), and librdkafka
    (confluent-kafka) sends them from its own C threads, 11 µs an event. With aiokafka
    and records drawn while sending, this process took about half a core at 5,000
    events/s (draw 22 µs, encode 11 µs, ``send`` 50 µs per event).
    """
    from confluent_kafka import Producer

    from streamfs.schemas.client import connect
    from streamfs.schemas.codec import Encoder, value_subject
    from streamfs.schemas.sample import EVENT_TIME_FIELDS

    async def registered() -> Encoder:
        async with connect(registry_url) as registry:
            return await Encoder.registered(
                registry, value_subject(topic), SCHEMA_PATH.read_text(encoding="utf-8")
            )

    encoder = asyncio.run(registered())
    time_field = EVENT_TIME_FIELDS["purchase"]
    total = min(len(records), int(rate * seconds))
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            # Java's and aiokafka's default partitioner: the keys land where theirs would.
            "partitioner": "murmur2_random",
        }
    )
    sent = probes = 0
    started = time.perf_counter()
    next_probe = started + 1.0 / probes_per_s
    while (now := time.perf_counter()) - started < seconds and sent < total:
        due = min(int((now - started) * rate), total)
        now_ms = time.time_ns() // 1_000_000
        for record in records[sent:due]:
            record[time_field] += now_ms
            if prober is not None and time.perf_counter() >= next_probe:
                record[KEY_FIELD] = f"probe-{run}-{probes}"
                sent_at = time.perf_counter()
                producer.produce(
                    topic, encoder.encode(record), record[KEY_FIELD].encode(), on_delivery=delivered
                )
                prober.add(record[KEY_FIELD], sent_at)
                probes += 1
                next_probe += 1.0 / probes_per_s
            else:
                producer.produce(
                    topic, encoder.encode(record), record[KEY_FIELD].encode(), on_delivery=delivered
                )
        sent = max(sent, due)
        producer.poll(0)
        time.sleep(0.01)
    left = producer.flush(30)
    if left or failures:
        raise RuntimeError(
            f"{left} events not delivered in 30 s, {len(failures)} failed"
            + (f" (first: {failures[0]})" if failures else "")
        )
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5_000.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--features", choices=["sample", "basic"], default="sample")
    parser.add_argument("--probes-per-s", type=float, default=10.0)
    parser.add_argument("--poll-ms", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=None, help="worker --batch-size")
    parser.add_argument("--gc-interval", type=float, default=None, help="worker --gc-interval")
    parser.add_argument("--cache-entities", type=int, default=None, help="worker --cache-entities")
    parser.add_argument(
        "--fetch-min-bytes", type=int, default=None, help="worker --fetch-min-bytes"
    )
    args = parser.parse_args(argv)

    from bench.ingest.run import create_topic
    from streamfs.settings import Settings
    from streamfs.store import FeatureStore

    settings = Settings.from_env(os.environ)
    bootstrap, registry_url = settings.kafka_bootstrap, settings.schema_registry_url
    if not (bootstrap and settings.redis_url and registry_url):
        print('run: eval "$(.venv/bin/streamfs services env)"', file=sys.stderr)
        return 2
    names = Names.fresh()
    settings = dataclasses.replace(
        settings, registry_topic=names.registry_topic, namespace=names.namespace
    )
    store = FeatureStore(settings)
    view = bench_view(names.topic, args.features)
    store.apply([view])
    asyncio.run(create_topic(bootstrap, names.topic, args.partitions))

    env = names.worker_env()
    cmd = [
        str(ROOT / ".venv" / "bin" / "streamfs"),
        "worker",
        "--name",
        f"fresh-{names.run}",
        "--data-dir",
        str(names.work_dir / "worker"),
        "--app-id",
        names.worker_group,
    ]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.gc_interval is not None:
        cmd += ["--gc-interval", str(args.gc_interval)]
    if args.cache_entities is not None:
        cmd += ["--cache-entities", str(args.cache_entities)]
    if args.fetch_min_bytes is not None:
        cmd += ["--fetch-min-bytes", str(args.fetch_min_bytes)]
    log = names.work_dir / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        # Warm up: wait until the worker serves a first probe, then measure.
        warm = Prober(store, args.poll_ms / 1000)
        warm.start()
        produce(
            bootstrap,
            registry_url,
            names.topic,
            10,
            1.0,
            draw(10, 10),
            10,
            "warm" + names.run,
            warm,
        )
        deadline = time.perf_counter() + 120
        while not warm.latencies_ms:
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"the worker did not come up; see {log}")
            time.sleep(0.2)
        time.sleep(2)
        warm.stopped.set()

        records = draw(args.entities, int(args.rate * args.seconds))
        prober = Prober(store, args.poll_ms / 1000)
        prober.start()
        watch = RssWatch(proc.pid)  # CPU per process over the measured span
        watch.poll()
        cpu_before, own_before = dict(watch.cpu_by_pid), time.process_time()
        t0 = time.perf_counter()
        sent = produce(
            bootstrap,
            registry_url,
            names.topic,
            args.rate,
            args.seconds,
            records,
            args.probes_per_s,
            names.run,
            prober,
        )
        produced_s = time.perf_counter() - t0
        watch.poll()
        own_cpu_s = time.process_time() - own_before
        deadline = time.perf_counter() + 60
        while prober.pending and time.perf_counter() < deadline:
            time.sleep(0.1)
        prober.stopped.set()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    from streamfs import native

    lat = sorted(prober.latencies_ms)
    print()
    print(
        f"{sent:,} events in {produced_s:.1f} s ({sent / produced_s:,.0f}/s) over"
        f" {args.entities:,} users, {len(view.features)} aggregations ({args.features});"
        f" {len(lat)} probes seen, {len(prober.pending)} never seen;"
        f" streamfs modules {native.status()}"
    )
    cores = {
        pid: (cpu - cpu_before.get(pid, 0.0)) / produced_s for pid, cpu in watch.cpu_by_pid.items()
    }
    children = sum(c for pid, c in cores.items() if pid != proc.pid)
    print(
        f"CPU while producing, in cores: worker {cores.get(proc.pid, 0.0):.2f}, its offline"
        f" child {children:.2f}, this bench (producer and prober) {own_cpu_s / produced_s:.2f}"
    )
    if lat:
        q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [lat[0]] * 99
        print()
        print("| produce -> visible via get_online_features | ms |")
        print("|---|---|")
        print(f"| p50 | {q[49]:.0f} |")
        print(f"| p90 | {q[89]:.0f} |")
        print(f"| p99 | {q[98]:.0f} |")
        print(f"| max | {lat[-1]:.0f} |")
        print()
        print(f"Over the run, per 10 s of sending (p50 / max ms): {over_time(prober.seen, 10.0)}")
    clean_up(bootstrap, names)
    return 0


def over_time(seen: Sequence[tuple[float, float]], slice_s: float) -> str:
    """Latencies by when their probe was sent: whether they hold or grow over the run
    (a stage that falls behind shows as a climb, not only as a worse p99)."""
    if not seen:
        return "none"
    start = min(sent_at for sent_at, _ in seen)
    slices: dict[int, list[float]] = {}
    for sent_at, latency_ms in seen:
        slices.setdefault(int((sent_at - start) // slice_s), []).append(latency_ms)
    return ", ".join(
        f"{i * slice_s:.0f}s {statistics.median(v):.0f}/{max(v):.0f}"
        for i, v in sorted(slices.items())
    )


if __name__ == "__main__":
    sys.exit(main())
