"""The registry's state: subjects, versions, ids and config, rebuilt by applying log records.

Pure: no I/O. Every instance applies the same records in the same (log) order, so
every instance holds the same state. Queries raise the registry's not-found
errors; writes are planned elsewhere (``commands``) as records to append.

An id names one schema (by canonical form) across all subjects. It lives while
some version, soft-deleted or not, refers to it; ids only grow, and the highest
id ever seen is remembered even after its last version is permanently deleted.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from streamfs.schemas.registry.compat import DEFAULT_COMPATIBILITY, Compatibility
from streamfs.schemas.registry.errors import (
    InvalidVersion,
    SchemaNotFound,
    StoreError,
    SubjectNotFound,
    VersionNotFound,
)
from streamfs.schemas.registry.parsing import parse
from streamfs.schemas.registry.records import (
    ConfigRecord,
    ConfigTombstone,
    IdWatermark,
    Record,
    SchemaRecord,
    SchemaTombstone,
)

LATEST: Literal["latest"] = "latest"
VersionSpec = int | Literal["latest"]
_MAX_VERSION = 2**31 - 1


def parse_version(text: str) -> VersionSpec:
    """A version from a URL: a number from 1, or ``latest`` (``-1`` means latest too)."""
    if text == LATEST or text == "-1":
        return LATEST
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number <= _MAX_VERSION:
        raise InvalidVersion(
            f"The specified version '{text}' is not a valid version id. Allowed values are "
            f'between [1, {_MAX_VERSION}] and the string "latest"'
        )
    return number


@dataclasses.dataclass(frozen=True, slots=True)
class Version:
    subject: str
    version: int
    schema_id: int
    schema: str
    deleted: bool


class RegistryState:
    """Subjects and ids as the records so far describe them."""

    def __init__(self) -> None:
        self._subjects: dict[str, dict[int, Version]] = {}
        self._configs: dict[str | None, Compatibility] = {}
        self._id_refs: dict[int, set[tuple[str, int]]] = {}
        self._id_text: dict[int, str] = {}
        self._id_canonical: dict[int, str] = {}
        self._id_by_canonical: dict[str, int] = {}
        self._max_id = 0

    # -- applying records -------------------------------------------------------------

    def apply(self, record: Record) -> None:
        """Fold one log record into the state. Raises :class:`StoreError` for a record that
        contradicts the state (an id reused for another schema); the state is then unchanged."""
        match record:
            case SchemaRecord():
                self._put_version(record)
            case SchemaTombstone():
                self._drop_version(record.subject, record.version)
            case ConfigRecord():
                self._configs[record.subject] = record.compatibility
            case ConfigTombstone():
                self._configs.pop(record.subject, None)
            case IdWatermark():
                self._max_id = max(self._max_id, record.max_id)

    def _put_version(self, record: SchemaRecord) -> None:
        known = self._id_canonical.get(record.schema_id)
        canonical = parse(record.schema).canonical
        if known is not None and known != canonical:
            raise StoreError(
                f"record {record.subject!r} version {record.version} gives id "
                f"{record.schema_id} to a schema other than the one it names"
            )
        self._drop_version(record.subject, record.version)
        self._subjects.setdefault(record.subject, {})[record.version] = Version(
            subject=record.subject,
            version=record.version,
            schema_id=record.schema_id,
            schema=record.schema,
            deleted=record.deleted,
        )
        self._id_refs.setdefault(record.schema_id, set()).add((record.subject, record.version))
        if record.schema_id not in self._id_text:  # new, or its last version was replaced
            self._id_text[record.schema_id] = record.schema
            self._id_canonical[record.schema_id] = canonical
            self._id_by_canonical.setdefault(canonical, record.schema_id)
        self._max_id = max(self._max_id, record.schema_id)

    def _drop_version(self, subject: str, version: int) -> None:
        versions = self._subjects.get(subject, {})
        old = versions.pop(version, None)
        if not versions:
            self._subjects.pop(subject, None)
        if old is None:
            return
        refs = self._id_refs.get(old.schema_id, set())
        refs.discard((subject, version))
        if not refs:
            self._id_refs.pop(old.schema_id, None)
            self._id_text.pop(old.schema_id, None)
            canonical = self._id_canonical.pop(old.schema_id)
            if self._id_by_canonical.get(canonical) == old.schema_id:
                del self._id_by_canonical[canonical]

    # -- subjects and versions --------------------------------------------------------

    def subjects(self, include_deleted: bool = False) -> list[str]:
        return sorted(
            name
            for name, versions in self._subjects.items()
            if include_deleted or any(not v.deleted for v in versions.values())
        )

    def all_versions(self, subject: str) -> list[Version]:
        """Every version of ``subject``, soft-deleted ones too, oldest first (maybe empty)."""
        return sorted(self._subjects.get(subject, {}).values(), key=lambda v: v.version)

    def live_versions(self, subject: str) -> list[Version]:
        return [v for v in self.all_versions(subject) if not v.deleted]

    def versions(self, subject: str, include_deleted: bool = False) -> list[Version]:
        """The versions a listing shows; :class:`SubjectNotFound` when there are none."""
        found = self.all_versions(subject) if include_deleted else self.live_versions(subject)
        if not found:
            raise SubjectNotFound(f"Subject '{subject}' not found.")
        return found

    def version(self, subject: str, spec: VersionSpec, include_deleted: bool = False) -> Version:
        candidates = self.versions(subject, include_deleted)
        if spec == LATEST:
            return candidates[-1]
        for candidate in candidates:
            if candidate.version == spec:
                return candidate
        raise VersionNotFound(f"Version {spec} not found.")

    def next_version(self, subject: str) -> int:
        existing = self._subjects.get(subject, {})
        return max(existing, default=0) + 1

    # -- ids --------------------------------------------------------------------------

    def id_for(self, canonical: str) -> int | None:
        return self._id_by_canonical.get(canonical)

    def schema_text(self, schema_id: int) -> str:
        text = self._id_text.get(schema_id)
        if text is None:
            raise SchemaNotFound(f"Schema {schema_id} not found")
        return text

    def uses_of(self, schema_id: int, include_deleted: bool = False) -> list[Version]:
        """The versions that carry ``schema_id``, by subject then version."""
        self.schema_text(schema_id)
        found = [self._subjects[s][v] for s, v in self._id_refs.get(schema_id, ())]
        return sorted(
            (v for v in found if include_deleted or not v.deleted),
            key=lambda v: (v.subject, v.version),
        )

    @property
    def max_id(self) -> int:
        return self._max_id

    # -- config -----------------------------------------------------------------------

    def config(self, subject: str | None) -> Compatibility | None:
        """The level set for ``subject`` (``None``: global), or ``None`` if none is set."""
        return self._configs.get(subject)

    def effective_compatibility(self, subject: str | None) -> Compatibility:
        level = self._configs.get(subject) if subject is not None else None
        return level or self._configs.get(None) or DEFAULT_COMPATIBILITY
