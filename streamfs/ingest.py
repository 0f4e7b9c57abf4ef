"""Validation at ingestion: consumed Kafka messages in, valid events and rejects out.

Every message of a batch ends in exactly one of two lists (bytewax's ok / err
streams): an :class:`Event` (entity key, event time, decoded record, offset) or a
:class:`Reject` (the untouched message, a stable ``reason``, a human ``detail``).
Nothing here raises for a bad event; the caller sends rejects to the dead-letter
topic (:mod:`streamfs.dlq`) and carries on. Reasons, in the order they are checked:

- the decoder's (:class:`streamfs.schemas.errors.Reason`): ``too_short``,
  ``bad_magic``, ``unknown_schema``, ``truncated``, ``undecodable``,
  ``missing_field``, ``incompatible_schema``; plus ``missing_field`` when the entity
  key or event time decodes as null;
- ``future``: event time more than ``max_future_skew_ms`` ahead of the clock;
- ``late``: event time before ``watermark - allowed_lateness_ms``.

Watermarks are explicit state. A partition's watermark is the greatest event time
accepted on it so far; a partition without one has no lateness bound yet. The
caller passes the watermarks in and gets the updated ones back in
:class:`Validated`, never mutated in place, so it can keep the old ones when a
batch has to be retried, and persist them next to the offsets it commits: a
restart restored from the same (offsets, watermarks) pair decides lateness the
same way as a run that never stopped. Rejected events never move a watermark
(one event stamped next year must not make the whole stream late). ``future``
depends on the clock, so a replay long after the fact may accept an event that
was once too far ahead; that is the point of bounding skew against "now".

Pure: no Kafka import, time comes from the injected ``clock`` (epoch ms), read
once per batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import structlog

from streamfs.definitions import Source
from streamfs.errors import StreamfsError
from streamfs.schemas.codec import Decoder, DecodeResult
from streamfs.schemas.errors import DecodeError, Reason

log = structlog.get_logger(__name__)

Headers = tuple[tuple[str, bytes], ...]
EntityKey = str | int
Watermarks = Mapping[int, int]  # partition -> greatest accepted event time (epoch ms)


class IngestReason(StrEnum):
    """Reject reasons of ingestion itself, next to the decoder's :class:`Reason`."""

    FUTURE = "future"  # event time too far ahead of the worker's clock
    LATE = "late"  # event time behind the partition watermark by more than allowed


@dataclass(frozen=True, slots=True)
class Message:
    """One consumed Kafka record, as ingestion needs it (no client types)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Event:
    """A valid event: decoded, keyed, stamped, and where it came from."""

    entity_key: EntityKey
    event_time_ms: int
    record: dict[str, Any]
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Reject:
    """A message that failed validation; ``reason`` is stable (DLQ header, metric label)."""

    message: Message
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Validated:
    events: list[Event]
    rejects: list[Reject]
    watermarks: dict[int, int]  # the state after this batch; the input is left as it was


class IngestCounter(Protocol):
    """Where validation reports its counts (see :class:`streamfs.metrics.IngestMetrics`)."""

    def rejected(self, topic: str, reason: str, count: int) -> None: ...
    def accepted(self, topic: str, count: int) -> None: ...


class NoCounter:
    def rejected(self, topic: str, reason: str, count: int) -> None:
        """Counts nowhere."""

    def accepted(self, topic: str, count: int) -> None:
        """Counts nowhere."""


class ForeignTopicError(StreamfsError):
    """A batch held a message of another topic than the source's: a wiring bug."""


def time_reject(
    source: Source, event_time_ms: int, now_ms: int, watermark_ms: int | None
) -> tuple[IngestReason, str] | None:
    """Why an event time is not admitted, or ``None``: the two time rules of the module doc."""
    ahead_ms = event_time_ms - now_ms
    if ahead_ms > source.max_future_skew_ms:
        return IngestReason.FUTURE, (
            f"{source.event_time_field}={event_time_ms} is {ahead_ms} ms ahead of the clock"
            f" ({now_ms}); at most {source.max_future_skew_ms} ms allowed"
        )
    if watermark_ms is not None:
        behind_ms = watermark_ms - event_time_ms
        if behind_ms > source.allowed_lateness_ms:
            return IngestReason.LATE, (
                f"{source.event_time_field}={event_time_ms} is {behind_ms} ms behind the"
                f" partition watermark {watermark_ms}; at most"
                f" {source.allowed_lateness_ms} ms allowed"
            )
    return None


class Validator:
    """Validates batches of one source's messages (see the module doc)."""

    def __init__(
        self,
        source: Source,
        decoder: Decoder,
        clock: Callable[[], int],
        counter: IngestCounter | None = None,
    ) -> None:
        self.source = source
        self._decoder = decoder
        self._clock = clock
        self._counter = counter or NoCounter()

    async def validate(self, messages: Sequence[Message], watermarks: Watermarks) -> Validated:
        """Decode (fetching unseen writer schemas) and check a batch; order is kept.

        Raises :class:`~streamfs.schemas.errors.RegistryUnavailableError` when the
        registry cannot be asked: the events may be fine, so retry the batch.
        """
        decoded = await self._decoder.decode_batch([m.value or b"" for m in messages])
        return self.check(messages, decoded, watermarks)

    def check(
        self, messages: Sequence[Message], decoded: Sequence[DecodeResult], watermarks: Watermarks
    ) -> Validated:
        """The checks after decoding: required fields, then the time rules."""
        source = self.source
        key_field, time_field = source.key_field, source.event_time_field
        now_ms = self._clock()
        marks = dict(watermarks)
        events: list[Event] = []
        rejects: list[Reject] = []
        for message, result in zip(messages, decoded, strict=True):
            if message.topic != source.topic:
                raise ForeignTopicError(
                    f"source {source.name!r} reads topic {source.topic!r}, got a message of"
                    f" {message.topic!r} (partition {message.partition}, offset {message.offset})"
                )
            if isinstance(result, DecodeError):
                detail = "value is null (a tombstone)" if message.value is None else str(result)
                rejects.append(Reject(message, result.reason, detail))
                continue
            key = result.get(key_field)
            event_time_ms = result.get(time_field)
            if key is None or event_time_ms is None:
                null = key_field if key is None else time_field
                rejects.append(Reject(message, Reason.MISSING_FIELD, f"field {null!r} is null"))
                continue
            watermark_ms = marks.get(message.partition)
            refused = time_reject(source, event_time_ms, now_ms, watermark_ms)
            if refused is not None:
                rejects.append(Reject(message, *refused))
                continue
            if watermark_ms is None or event_time_ms > watermark_ms:
                marks[message.partition] = event_time_ms
            events.append(Event(key, event_time_ms, result, message.partition, message.offset))
        self._count(events, rejects)
        return Validated(events, rejects, marks)

    def _count(self, events: list[Event], rejects: list[Reject]) -> None:
        topic = self.source.topic
        if events:
            self._counter.accepted(topic, len(events))
        if rejects:
            by_reason = Counter(r.reason for r in rejects)
            for reason, count in by_reason.items():
                self._counter.rejected(topic, reason, count)
            log.warning(
                "ingest_rejected", topic=topic, rejects={str(k): n for k, n in by_reason.items()}
            )
