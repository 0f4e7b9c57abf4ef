"""The records of the ``_schemas`` log and their bytes: the registry's persistent format.

Keys and values are JSON shaped like Confluent's (``{"keytype":"SCHEMA","subject":..,
"version":..,"magic":1}`` -> ``{"subject","version","id","schema","deleted"}``;
``CONFIG`` records), so the topic reads familiarly, though it is not promised to be
byte-identical. A key's bytes are built in one fixed field order: the topic is
compacted, and compaction keeps the last value per identical key bytes.

A ``None`` value is a tombstone: it removes the key (permanent deletes). Because
compaction eventually drops tombstones too, a permanent delete also writes an
id watermark, so an id that once existed is never handed out again.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from streamfs.schemas.registry.compat import Compatibility
from streamfs.schemas.registry.errors import StoreError

SCHEMA_KEYTYPE = "SCHEMA"
CONFIG_KEYTYPE = "CONFIG"
ID_WATERMARK_KEYTYPE = "STREAMFS_ID_WATERMARK"


@dataclasses.dataclass(frozen=True, slots=True)
class SchemaRecord:
    """Version ``version`` of ``subject`` is schema ``schema_id`` (soft-deleted or not)."""

    subject: str
    version: int
    schema_id: int
    schema: str
    deleted: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class SchemaTombstone:
    """Version ``version`` of ``subject`` is permanently deleted."""

    subject: str
    version: int


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigRecord:
    """The compatibility level of ``subject`` (``None``: the global level)."""

    subject: str | None
    compatibility: Compatibility


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigTombstone:
    """``subject`` falls back to the global level again."""

    subject: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class IdWatermark:
    """Every id up to ``max_id`` has been used; new ids start above it."""

    max_id: int


Record = SchemaRecord | SchemaTombstone | ConfigRecord | ConfigTombstone | IdWatermark


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def encode(record: Record) -> tuple[bytes, bytes | None]:
    """The ``(key, value)`` bytes of ``record``; value ``None`` for a tombstone."""
    match record:
        case SchemaRecord() | SchemaTombstone():
            key = {
                "keytype": SCHEMA_KEYTYPE,
                "subject": record.subject,
                "version": record.version,
                "magic": 1,
            }
            if isinstance(record, SchemaTombstone):
                return _dumps(key), None
            return _dumps(key), _dumps(
                {
                    "subject": record.subject,
                    "version": record.version,
                    "id": record.schema_id,
                    "schema": record.schema,
                    "deleted": record.deleted,
                }
            )
        case ConfigRecord() | ConfigTombstone():
            key = {"keytype": CONFIG_KEYTYPE, "subject": record.subject, "magic": 0}
            if isinstance(record, ConfigTombstone):
                return _dumps(key), None
            return _dumps(key), _dumps({"compatibilityLevel": record.compatibility.value})
        case IdWatermark():
            return (
                _dumps({"keytype": ID_WATERMARK_KEYTYPE, "magic": 0}),
                _dumps({"maxId": record.max_id}),
            )


def decode(key: bytes, value: bytes | None) -> Record | None:
    """The record in ``key``/``value``; ``None`` for key types this version does not use.

    Raises :class:`StoreError` for bytes that are not a well-formed record.
    """
    try:
        k = json.loads(key)
        keytype = k["keytype"]
        v = json.loads(value) if value is not None else None
        if keytype == SCHEMA_KEYTYPE:
            if v is None:
                return SchemaTombstone(subject=str(k["subject"]), version=int(k["version"]))
            return SchemaRecord(
                subject=str(v["subject"]),
                version=int(v["version"]),
                schema_id=int(v["id"]),
                schema=str(v["schema"]),
                deleted=bool(v.get("deleted", False)),
            )
        if keytype == CONFIG_KEYTYPE:
            subject = None if k.get("subject") is None else str(k["subject"])
            if v is None:
                return ConfigTombstone(subject=subject)
            level = Compatibility(v["compatibilityLevel"])
            return ConfigRecord(subject=subject, compatibility=level)
        if keytype == ID_WATERMARK_KEYTYPE and v is not None:
            return IdWatermark(max_id=int(v["maxId"]))
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"malformed registry record key={key!r} value={value!r}: {exc}") from exc
