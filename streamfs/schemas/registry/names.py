"""Names the registry persists in Kafka, built here and nowhere else.

Renaming any of these orphans the stored schemas (topic) or lets two writers
run at once (transactional id), so they change only with a migration.
"""

from __future__ import annotations

DEFAULT_TOPIC = "_schemas"
"""Confluent's default; a compacted, single-partition topic holding every record."""

_TRANSACTIONAL_ID_PREFIX = "streamfs-schema-registry-v1"


def transactional_id(topic: str) -> str:
    """The one transactional id every instance writing ``topic`` shares (see kafka_store)."""
    return f"{_TRANSACTIONAL_ID_PREFIX}.{topic}"
