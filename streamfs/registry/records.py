"""Registry records: one immutable record per version of a definition, as Kafka key and value.

Key (JSON, sorted keys): ``{"kind": ..., "name": ..., "version": n}``; every version
has its own key, so a compacted topic keeps every version forever. ``kind`` is
``entity``, ``source`` or ``view`` (the definitions), or ``retire`` (view version
``n`` of ``name`` stops being served). The value says who made the change, when,
what changed (one line per changed field) and the definition's JSON
(:mod:`streamfs.definitions.codec`); a ``spec`` of ``null`` records a removal.

Views also carry ``state_version``: the version whose computed state (Redis keys,
worker tables) serves this one. A change that leaves every aggregation as it was
(a description, an owner, a derived feature) keeps the state; one that changes what
an aggregation means (function, input, window, hop, filter, source) starts a new
one. ``feature_versions`` numbers each feature's meanings the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from streamfs.errors import StreamfsError

JSON = Any
KINDS: Final = ("entity", "source", "view")
RETIRE: Final = "retire"
FORMAT: Final = 1  # the value's layout; readers skip records of a newer format


class RegistryError(StreamfsError):
    """The registry cannot be read or written, or refuses a change; the message says which."""


@dataclass(frozen=True, slots=True)
class Record:
    """One version of one definition (see the module docstring)."""

    kind: str
    name: str
    version: int
    spec: JSON
    who: str
    when_ms: int
    changes: tuple[str, ...] = ()
    origin: str = "apply"  # "apply" (a topology) or "sql" (register_feature)
    state_version: int = 0
    feature_versions: dict[str, int] = field(default_factory=dict)
    sql: dict[str, str] = field(default_factory=dict)  # feature -> the SQL it was registered as

    @property
    def removed(self) -> bool:
        return self.spec is None

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)


def encode(record: Record) -> tuple[bytes, bytes]:
    key = {"kind": record.kind, "name": record.name, "version": record.version}
    value = {
        "format": FORMAT,
        "spec": record.spec,
        "who": record.who,
        "when_ms": record.when_ms,
        "changes": list(record.changes),
        "origin": record.origin,
        "state_version": record.state_version,
        "feature_versions": record.feature_versions,
        "sql": record.sql,
    }
    return (
        json.dumps(key, sort_keys=True).encode(),
        json.dumps(value, sort_keys=True, separators=(",", ":")).encode(),
    )


def decode(key: bytes, value: bytes | None) -> Record | None:
    """The record, or ``None`` for a Kafka tombstone or a newer format (skipped)."""
    if value is None:
        return None
    try:
        k = json.loads(key)
        v = json.loads(value)
        if v.get("format", 1) > FORMAT:
            return None
        return Record(
            kind=str(k["kind"]),
            name=str(k["name"]),
            version=int(k["version"]),
            spec=v["spec"],
            who=str(v["who"]),
            when_ms=int(v["when_ms"]),
            changes=tuple(v.get("changes", ())),
            origin=str(v.get("origin", "apply")),
            state_version=int(v.get("state_version", 0)),
            feature_versions={str(n): int(x) for n, x in v.get("feature_versions", {}).items()},
            sql={str(n): str(x) for n, x in v.get("sql", {}).items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RegistryError(f"undecodable registry record {key!r}: {exc!r}") from exc
