"""Writes, planned as pure functions: given the state, the records to append and the answer.

A store runs a plan against state that is current (caught up with the log) and
appends its records atomically; nothing here does I/O. A plan that finds nothing
to change returns no records, so repeating a request writes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Generic, TypeVar

from streamfs.schemas.registry.compat import Compatibility, incompatibilities
from streamfs.schemas.registry.errors import (
    IncompatibleSchema,
    SchemaNotFound,
    SubjectConfigNotFound,
    SubjectNotFound,
    SubjectNotSoftDeleted,
    SubjectSoftDeleted,
    VersionNotFound,
    VersionNotSoftDeleted,
    VersionSoftDeleted,
)
from streamfs.schemas.registry.parsing import ParsedSchema
from streamfs.schemas.registry.records import (
    ConfigRecord,
    ConfigTombstone,
    IdWatermark,
    Record,
    SchemaRecord,
    SchemaTombstone,
)
from streamfs.schemas.registry.state import LATEST, RegistryState, Version, VersionSpec

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    result: T
    records: tuple[Record, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Registered:
    schema_id: int
    version: int


def register(state: RegistryState, subject: str, schema: ParsedSchema) -> Outcome[Registered]:
    """Register ``schema`` under ``subject``: its existing version, or a new one if compatible.

    An id already given to the same canonical schema (under any subject) is reused,
    with the text first registered for it.
    """
    live = state.live_versions(subject)
    known_id = state.id_for(schema.canonical)
    for version in live:
        if version.schema_id == known_id:
            return Outcome(Registered(version.schema_id, version.version))
    level = state.effective_compatibility(subject)
    problems = incompatibilities(level, schema.text, [(v.version, v.schema) for v in live])
    if problems:
        raise IncompatibleSchema(
            f"Schema being registered is incompatible with an earlier schema for subject "
            f'"{subject}" ({level.value}), details: {problems}'
        )
    if known_id is None:
        schema_id, text = state.max_id + 1, schema.text
    else:
        schema_id, text = known_id, state.schema_text(known_id)
    number = state.next_version(subject)
    return Outcome(Registered(schema_id, number), (SchemaRecord(subject, number, schema_id, text),))


def lookup(
    state: RegistryState, subject: str, schema: ParsedSchema, include_deleted: bool = False
) -> Version:
    """The version of ``subject`` holding ``schema`` (newest first if several)."""
    candidates = state.all_versions(subject) if include_deleted else state.live_versions(subject)
    if not candidates:
        raise SubjectNotFound(f"Subject '{subject}' not found.")
    schema_id = state.id_for(schema.canonical)
    for version in reversed(candidates):
        if version.schema_id == schema_id:
            return version
    raise SchemaNotFound("Schema not found")


def check_compatibility(
    state: RegistryState, subject: str, spec: VersionSpec | None, schema: ParsedSchema
) -> list[str]:
    """Why ``schema`` is not compatible; ``spec`` ``None``: by the level, against all it names;
    ``latest``: the level's rule as registration applies it; a number: that version only."""
    level = state.effective_compatibility(subject)
    if spec is None:
        previous = state.live_versions(subject)
    elif spec == LATEST:
        previous = state.versions(subject)
    else:
        previous = [state.version(subject, spec)]
    return incompatibilities(level, schema.text, [(v.version, v.schema) for v in previous])


def delete_subject(state: RegistryState, subject: str, permanent: bool) -> Outcome[list[int]]:
    """Soft-delete every live version, or (``permanent``) erase a soft-deleted subject."""
    every = state.all_versions(subject)
    if not every:
        raise SubjectNotFound(f"Subject '{subject}' not found.")
    live = [v for v in every if not v.deleted]
    if not permanent:
        if not live:
            raise SubjectSoftDeleted(
                f"Subject '{subject}' was soft deleted.Set permanent=true to delete permanently"
            )
        return Outcome(
            [v.version for v in live],
            tuple(_soft_deleted(v) for v in live),
        )
    if live:
        raise SubjectNotSoftDeleted(
            f"Subject '{subject}' was not deleted first before being permanently deleted"
        )
    records: list[Record] = [SchemaTombstone(v.subject, v.version) for v in every]
    if state.config(subject) is not None:
        records.append(ConfigTombstone(subject))
    records.append(IdWatermark(state.max_id))
    return Outcome([v.version for v in every], tuple(records))


def delete_version(
    state: RegistryState, subject: str, spec: VersionSpec, permanent: bool
) -> Outcome[int]:
    """Soft-delete one version, or (``permanent``) erase a soft-deleted one."""
    if not state.all_versions(subject):
        raise SubjectNotFound(f"Subject '{subject}' not found.")
    # "latest" for a soft delete means the latest live version; a number names any version.
    include_deleted = permanent or spec != LATEST
    try:
        version = state.version(subject, spec, include_deleted)
    except SubjectNotFound as exc:  # every version is soft-deleted
        raise VersionNotFound(f"Version {spec} not found.") from exc
    if not permanent:
        if version.deleted:
            raise VersionSoftDeleted(
                f"Subject '{subject}' Version {version.version} was soft deleted.Set "
                f"permanent=true to delete permanently"
            )
        return Outcome(version.version, (_soft_deleted(version),))
    if not version.deleted:
        raise VersionNotSoftDeleted(
            f"Subject '{subject}' Version {version.version} was not deleted first before "
            f"being permanently deleted"
        )
    return Outcome(
        version.version,
        (SchemaTombstone(subject, version.version), IdWatermark(state.max_id)),
    )


def _soft_deleted(version: Version) -> SchemaRecord:
    return SchemaRecord(
        version.subject, version.version, version.schema_id, version.schema, deleted=True
    )


def set_config(
    state: RegistryState, subject: str | None, level: Compatibility
) -> Outcome[Compatibility]:
    if state.config(subject) is level:
        return Outcome(level)
    return Outcome(level, (ConfigRecord(subject, level),))


def delete_config(state: RegistryState, subject: str) -> Outcome[Compatibility]:
    """Drop the subject's own level; answers the level it had."""
    level = state.config(subject)
    if level is None:
        if not state.all_versions(subject):
            raise SubjectNotFound(f"Subject '{subject}' not found.")
        raise SubjectConfigNotFound(
            f"Subject '{subject}' does not have subject-level compatibility configured"
        )
    return Outcome(level, (ConfigTombstone(subject),))
