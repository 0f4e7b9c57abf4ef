"""Names that streamfs persists (Kafka topics, consumer groups), built here and nowhere else.

A persisted name outlives the code that wrote it: renaming a consumer group restarts
consumption from ``auto_offset_reset``, renaming a dead-letter topic strands its
records. So every such name is built by a function below, and names that only
streamfs reads carry a version (``v1``) that changes only with a migration.

The schema registry subject of a topic's values follows Confluent's
TopicNameStrategy and is built by :func:`streamfs.schemas.codec.value_subject`;
the registry's own topic names live in :mod:`streamfs.schemas.registry.names`.
"""

from __future__ import annotations

DLQ_SUFFIX = ".dlq"
_INGEST_GROUP_PREFIX = "streamfs.ingest.v1"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``: unversioned, because users read it by this name."""
    return f"{topic}{DLQ_SUFFIX}"


def ingest_group(source_name: str) -> str:
    """The consumer group whose committed offsets say how far a source has been ingested."""
    return f"{_INGEST_GROUP_PREFIX}.{source_name}"


_WORKER_APP = "streamfs-worker-v1"
_STATE_TABLE_PREFIX = "state-v1"


def worker_app_id() -> str:
    """The Faust app id of the workers: their consumer group and changelog topic prefix."""
    return _WORKER_APP


def state_table(source_name: str) -> str:
    """A source's Faust state table (changelog topic ``{app_id}-{table}-changelog``)."""
    return f"{_STATE_TABLE_PREFIX}-{source_name}"


REGISTRY_TOPIC = "_streamfs-registry-v1"
"""The feature registry's compacted, single-partition topic (``STREAMFS_REGISTRY_TOPIC``)."""

_REGISTRY_TXN_PREFIX = "streamfs-registry-v1"


def registry_transactional_id(topic: str) -> str:
    """The transactional id every registry writer of ``topic`` shares: one writer at a time."""
    return f"{_REGISTRY_TXN_PREFIX}.{topic}"
