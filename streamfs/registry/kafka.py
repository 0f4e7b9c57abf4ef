"""The registry in Kafka: a compacted, single-partition topic of immutable version records.

Every version has its own key (:mod:`streamfs.registry.records`), so compaction
never drops history; one partition keeps the log in order. Every worker, server and
notebook that reads the topic to its end holds the same definitions.

Reading: one consumer per backend (``read_committed``), assigned to the partition;
each :meth:`KafkaBackend.load` reads from where the last one stopped to the
partition's last stable offset and folds the records into the cached state.

Writing, and what happens with two concurrent writers: every writer uses one
transactional producer with the same ``transactional.id``
(:func:`streamfs.names.registry_transactional_id`); :mod:`streamfs.kafkalog` has the
protocol and why it makes one writer at a time. Starting the producer fences every
other writer; the writer then reads to the end, plans against that state, and writes
the plan's records in one transaction, re-reading and re-planning when fenced, a
bounded number of times. So two concurrent applies are serialised: the second plans
against the first's result (and, for the same topology, finds nothing to do);
neither can interleave records with the other, nor write a version number twice.
A plan's records are all committed or none (nothing applied half-way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from streamfs.kafkalog import CompactedLog, Owner, Record
from streamfs.names import REGISTRY_TOPIC, registry_transactional_id
from streamfs.registry.plan import Plan
from streamfs.registry.records import RegistryError, decode, encode
from streamfs.registry.state import RegistryState

log = structlog.get_logger(__name__)

_OWNER = Owner(
    error=RegistryError,
    topic_created="registry_topic_created",
    write_retry="registry_write_retry",
    record_skipped="registry_record_skipped",
    write_attempts=10,
    backoff_s=0.05,
)


class KafkaBackend:
    """Registry records in ``topic`` on the Kafka at ``bootstrap`` (see the module docstring)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = REGISTRY_TOPIC,
        *,
        replication_factor: int = 1,
        timeout_s: float = 30.0,
    ) -> None:
        self._topic = topic
        self._log = CompactedLog(
            bootstrap,
            topic,
            registry_transactional_id(topic),
            _OWNER,
            replication_factor=replication_factor,
        )
        self._timeout_s = timeout_s
        self._state = RegistryState()

    @property
    def topic(self) -> str:
        return self._topic

    async def load(self) -> RegistryState:
        await self._log.read_to_end(self._apply, self._timeout_s)
        return self._state

    async def commit(self, make: Callable[[RegistryState], Plan]) -> Plan:
        async def planned() -> tuple[Plan, Sequence[Record]]:
            plan = make(await self.load())  # a refused definition propagates from here
            return plan, [encode(record) for record in plan.records]

        plan, end = await self._log.write(planned)
        if end is not None:
            log.info(
                "registry_records_written",
                topic=self._topic,
                records=len(plan.records),
                steps=[f"{s.action} {s.kind} {s.name} v{s.version}" for s in plan.steps],
            )
        return plan

    async def close(self) -> None:
        await self._log.close()

    def _apply(self, key: bytes, value: bytes | None) -> None:
        """Fold one record in; the log skips it (one bad record must not hide every other
        definition) if this raises :class:`RegistryError`."""
        record = decode(key, value)
        if record is not None:
            self._state.apply(record)
