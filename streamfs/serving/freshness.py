"""Freshness for the web view: per view the newest event behind its values and the lag
behind now; per source the event rate into its topic and how many went to the DLQ.

- Views: a bounded ``SCAN`` of the view's Redis keys (at most ``sample`` entities and
  ``max_scans`` round trips),
  reading each one's last event time ``e`` and write time ``w``. On a large
  keyspace this is a sample, and the page says how many entities it saw.
- Sources: the sum of the end offsets of the source topic and of its dead-letter
  topic, sampled every refresh; the rate is the difference between two samples.
  The DLQ count is every event ever rejected (the topic's end offsets), which is
  what the worker's ``streamfs_ingest_rejected_events`` counts per process.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from streamfs.definitions import Source
from streamfs.names import dlq_topic
from streamfs.online import KEY_PREFIX, ViewLayout
from streamfs.serving.metrics import ServerMetrics


@dataclass(frozen=True, slots=True)
class ViewFreshness:
    view: str
    version: int
    entities_seen: int
    last_event_time_ms: int | None
    last_write_ms: int | None
    lag_ms: int | None  # now - newest event time


async def view_freshness(
    client: Any,
    layout: ViewLayout,
    namespace: str,
    now_ms: int,
    sample: int = 1_000,
    max_scans: int = 20,
) -> ViewFreshness:
    pattern = f"{KEY_PREFIX}:{namespace}:{layout.name}@{layout.version}:*"
    keys: list[bytes] = []
    cursor = 0
    for _ in range(max_scans):  # bounded: a large shared keyspace must not stall the page
        cursor, batch = await client.scan(cursor, match=pattern, count=1_000)
        keys.extend(batch)
        if not cursor or len(keys) >= sample:
            break
    keys = keys[:sample]
    newest_event: int | None = None
    newest_write: int | None = None
    if keys:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "e", "w")
        for event, write in await pipe.execute():
            if event is not None:
                newest_event = max(newest_event or 0, int(event))
            if write is not None:
                newest_write = max(newest_write or 0, int(write))
    lag = None if newest_event is None else max(0, now_ms - newest_event)
    return ViewFreshness(layout.name, layout.version, len(keys), newest_event, newest_write, lag)


METADATA_EVERY_S = 60.0  # how often topics not found yet are looked for again


@dataclass(frozen=True, slots=True)
class SourceStats:
    source: str
    topic: str
    events: int  # end offsets summed over partitions
    dlq_events: int
    events_per_s: float | None  # since the previous sample


class TopicStats:
    """Samples end offsets of source and dead-letter topics (see the module docstring)."""

    def __init__(self, kafka_bootstrap: str | None, clock: Callable[[], int]) -> None:
        self._bootstrap, self._clock = kafka_bootstrap, clock
        self._consumer: Any = None
        self._metadata_at = -METADATA_EVERY_S  # when the cluster's topics were last fetched
        self._previous: dict[str, tuple[int, int]] = {}  # topic -> (at ms, end offsets)
        self.latest: dict[str, SourceStats] = {}

    async def _client(self) -> Any:
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap)
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def end_offsets(self, topics: list[str]) -> dict[str, int]:
        """Per topic, its end offsets summed over partitions (0 for a topic not there)."""
        from aiokafka import TopicPartition

        consumer = await self._client()
        unknown = any(consumer.partitions_for_topic(t) is None for t in topics)
        if unknown and time.monotonic() - self._metadata_at >= METADATA_EVERY_S:
            # A topic not seen yet (perhaps created since): look again, but not at every
            # sample: the update fetches every topic of the cluster, ~20 ms of the event
            # loop and thousands of objects with the thousand topics of a shared Kafka.
            await consumer._client.force_metadata_update()
            self._metadata_at = time.monotonic()
        partitions = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        ends = await consumer.end_offsets(partitions) if partitions else {}
        out = dict.fromkeys(topics, 0)
        for tp, end in ends.items():
            out[tp.topic] += end
        return out

    async def sample(self, sources: Iterable[Source], metrics: ServerMetrics) -> None:
        if not self._bootstrap:
            return
        sources = list(sources)
        topics = [s.topic for s in sources] + [dlq_topic(s.topic) for s in sources]
        if not topics:
            return
        ends = await self.end_offsets(topics)
        now = self._clock()
        latest = {}
        for source in sources:
            events, dlq = ends[source.topic], ends[dlq_topic(source.topic)]
            rate = None
            if source.topic in self._previous:
                at, before = self._previous[source.topic]
                if now > at:
                    rate = (events - before) * 1000 / (now - at)
            self._previous[source.topic] = (now, events)
            latest[source.name] = SourceStats(source.name, source.topic, events, dlq, rate)
            metrics.topic_end_offsets.labels(source.topic).set(events)
            metrics.topic_end_offsets.labels(dlq_topic(source.topic)).set(dlq)
        self.latest = latest

    async def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
