"""The dead-letter sink: every rejected event, bytes untouched, to ``<topic>.dlq``.

A dead letter keeps the original key, value and headers, so it can be inspected or
replayed as it was, and adds headers that say what happened (values UTF-8 text):

==========================  ==================================================
``streamfs.reason``         stable reason (``bad_magic``, ``late``, ...)
``streamfs.detail``         human-readable detail (at most 1,000 characters)
``streamfs.topic``          the topic it was consumed from
``streamfs.partition``      its partition there (decimal)
``streamfs.offset``         its offset there (decimal)
``streamfs.rejected_at``    when it was rejected, epoch ms (decimal)
==========================  ==================================================

They come after the original headers; a dead letter that is rejected again
carries both sets, and the last ``streamfs.*`` of a name is the newest.
The dead-letter topic is created by the broker on first use (auto-create) or by
the operator beforehand; its partitioning follows the original key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from streamfs.ingest import Headers, Reject
from streamfs.names import dlq_topic

HEADER_REASON: Final = "streamfs.reason"
HEADER_DETAIL: Final = "streamfs.detail"
HEADER_TOPIC: Final = "streamfs.topic"
HEADER_PARTITION: Final = "streamfs.partition"
HEADER_OFFSET: Final = "streamfs.offset"
HEADER_REJECTED_AT: Final = "streamfs.rejected_at"
MAX_DETAIL_CHARS: Final = 1_000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


def dead_letter(reject: Reject, rejected_at_ms: int) -> DeadLetter:
    """The record that carries ``reject`` to its dead-letter topic."""
    message = reject.message
    ours = (
        (HEADER_REASON, str(reject.reason)),
        (HEADER_DETAIL, reject.detail[:MAX_DETAIL_CHARS]),
        (HEADER_TOPIC, message.topic),
        (HEADER_PARTITION, str(message.partition)),
        (HEADER_OFFSET, str(message.offset)),
        (HEADER_REJECTED_AT, str(rejected_at_ms)),
    )
    headers = message.headers + tuple((name, value.encode()) for name, value in ours)
    return DeadLetter(dlq_topic(message.topic), message.key, message.value, headers)


class DeadLetterSink:
    """Sends rejects through a started ``AIOKafkaProducer``; :meth:`send` returns once acked.

    The producer should use ``acks="all"`` (and idempotence) so that "acked" means
    stored: the consumer commits the rejected offsets right after.
    """

    def __init__(self, producer: Any, clock: Callable[[], int]) -> None:
        self._producer = producer  # aiokafka ships no type information
        self._clock = clock

    async def send(self, rejects: Sequence[Reject]) -> None:
        """Send every reject and wait for all acknowledgements; raises if any send failed."""
        if not rejects:
            return
        now_ms = self._clock()
        pending = []
        for reject in rejects:
            letter = dead_letter(reject, now_ms)
            pending.append(
                await self._producer.send(
                    letter.topic, value=letter.value, key=letter.key, headers=list(letter.headers)
                )
            )
        await asyncio.gather(*pending)
