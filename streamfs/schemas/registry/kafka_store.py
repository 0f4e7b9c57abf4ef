"""The registry's durable store: a compacted, single-partition Kafka topic (``_schemas``).

Reading. Each instance reads the topic from the beginning with
``isolation_level=read_committed`` and folds every record into its
:class:`RegistryState`; :meth:`KafkaStore.start` returns once it has read to the end,
so ids survive restarts, and instances reading the same topic hold the same state.
A background task keeps reading; :meth:`KafkaStore.sync` waits until the state has
caught up with the topic's end as it is now (the server calls it before answering
"not found", so a schema registered through another instance is found at once).

Writing: one writer at a time, by Kafka transactional fencing (:mod:`streamfs.kafkalog`
has the protocol and why it leaves no writer planning from stale state). Every
instance writes through a transactional producer with the same fixed
``transactional.id`` (``names.transactional_id(topic)``). A write:

1. makes sure this instance has a producer (starting one fences the others);
2. reads the topic to its end (the last stable offset);
3. plans the records against that state (pure, ``commands``);
4. sends them in one transaction and commits;
5. waits until its own reader has applied them.

Why ids cannot be assigned twice: a plan that committed was made from a state that
held every committed record (see :mod:`streamfs.kafkalog`), so the next id and
version it picked were free. A fenced writer re-reads and re-plans; re-planning also
makes a retried request idempotent (the same schema finds its id and writes nothing).
Concurrent writers can fence each other repeatedly; attempts are bounded, with
random backoff, and then fail with :class:`StoreError` (HTTP 500, code 50001).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import TypeVar

import structlog

from streamfs.kafkalog import CompactedLog, Owner, Record
from streamfs.schemas.registry.commands import Outcome
from streamfs.schemas.registry.errors import StoreError
from streamfs.schemas.registry.names import DEFAULT_TOPIC, transactional_id
from streamfs.schemas.registry.records import decode, encode
from streamfs.schemas.registry.state import RegistryState

T = TypeVar("T")
log = structlog.get_logger(__name__)

_OWNER = Owner(
    error=StoreError,
    topic_created="schema_topic_created",
    write_retry="schema_write_retry",
    record_skipped="schema_record_skipped",
    writer_started="schema_writer_started",
    write_attempts=12,
    backoff_s=0.02,
)


class KafkaStore:
    """Registry state backed by ``topic``; see the module docstring for the write protocol."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = DEFAULT_TOPIC,
        *,
        sync_timeout_s: float = 30.0,
        poll_ms: int = 50,
        replication_factor: int = 1,
    ) -> None:
        self._topic = topic
        self._log = CompactedLog(
            bootstrap,
            topic,
            transactional_id(topic),
            _OWNER,
            replication_factor=replication_factor,
            poll_ms=poll_ms,
        )
        self._sync_timeout_s = sync_timeout_s
        self._state = RegistryState()
        self._reader: asyncio.Task[None] | None = None
        self._reader_error: BaseException | None = None
        self._position = 0
        self._progress = asyncio.Condition()

    @property
    def state(self) -> RegistryState:
        return self._state

    async def start(self) -> None:
        """Create the topic if missing, then read it to its end."""
        try:
            await self._log.open()
            self._reader = asyncio.create_task(self._read_loop(), name="schemas-reader")
            await self.sync()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "schema_store_ready",
            topic=self._topic,
            offset=self._position,
            subjects=len(self._state.subjects(include_deleted=True)),
        )

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._log.close()

    async def sync(self) -> None:
        """Wait until every record committed to the topic before this call is applied."""
        if self._reader is None:
            raise StoreError("the schema store is not started")
        await self._wait_applied(await self._log.end_offset())

    async def execute(self, plan: Callable[[RegistryState], Outcome[T]]) -> T:
        """Run ``plan`` on current state and append its records, as the only writer."""

        async def planned() -> tuple[Outcome[T], Sequence[Record]]:
            await self.sync()
            outcome = plan(self._state)  # registry errors propagate from here
            return outcome, [encode(record) for record in outcome.records]

        outcome, end = await self._log.write(planned)
        if end is not None:
            await self._wait_applied(end)
            log.info(
                "schema_records_written",
                topic=self._topic,
                records=len(outcome.records),
                end_offset=end,
            )
        return outcome.result

    async def _wait_applied(self, offset: int) -> None:
        def reached() -> bool:
            return self._position >= offset or self._reader_error is not None

        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(reached), self._sync_timeout_s)
            except TimeoutError as exc:
                raise StoreError(
                    f"topic {self._topic!r} not read to offset {offset} within "
                    f"{self._sync_timeout_s}s (at {self._position})"
                ) from exc
        if self._reader_error is not None:
            raise StoreError(f"reading {self._topic!r} failed: {self._reader_error!r}")

    async def _read_loop(self) -> None:
        try:
            while True:
                position = await self._log.read(self._apply)
                async with self._progress:
                    self._position = position
                    self._progress.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("schema_reader_failed", topic=self._topic, error=repr(exc))
            async with self._progress:
                self._reader_error = exc
                self._progress.notify_all()

    def _apply(self, key: bytes, value: bytes | None) -> None:
        """Fold one record in; the log skips it (one bad record must not take the registry
        down) if this raises :class:`StoreError`."""
        record = decode(key, value)
        if record is not None:
            self._state.apply(record)
