"""Compatibility levels and the check, by Avro's schema-resolution rules.

The rules themselves come from the Apache ``avro`` package's
``ReaderWriterCompatibilityChecker`` (a port of Java's ``SchemaCompatibility``);
this module only decides which pairs to check:

- BACKWARD: the new schema, as reader, reads data written with the previous one.
- FORWARD: the previous schema, as reader, reads data written with the new one.
- FULL: both.
- ``*_TRANSITIVE``: against every live (not soft-deleted) version, else only the latest.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.schema import Schema

from streamfs.schemas.registry.errors import InvalidCompatibilityLevel
from streamfs.schemas.registry.parsing import avro_schema


class Compatibility(enum.StrEnum):
    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @property
    def transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        return self.value.startswith(("FORWARD", "FULL"))


DEFAULT_COMPATIBILITY = Compatibility.BACKWARD


def parse_level(value: object) -> Compatibility:
    """A level from a request body; raises :class:`InvalidCompatibilityLevel` for anything else."""
    if isinstance(value, str):
        try:
            return Compatibility(value.upper())
        except ValueError:
            pass
    valid = ", ".join(level.value for level in Compatibility)
    raise InvalidCompatibilityLevel(
        f"Invalid compatibility level {value!r}. Valid values are: {valid}"
    )


def incompatibilities(
    level: Compatibility, new_text: str, previous: Sequence[tuple[int, str]]
) -> list[str]:
    """Why ``new_text`` may not follow ``previous`` under ``level`` (empty: it may).

    ``previous`` holds ``(version, schema text)`` of the live versions, oldest first.
    A non-transitive level looks at the last one only.
    """
    if level is Compatibility.NONE or not previous:
        return []
    targets = previous if level.transitive else previous[-1:]
    new = avro_schema(new_text)
    messages: list[str] = []
    for version, old_text in reversed(targets):
        old = avro_schema(old_text)
        if level.backward:
            messages += _pair(reader=new, writer=old, role="reader", version=version)
        if level.forward:
            messages += _pair(reader=old, writer=new, role="writer", version=version)
    return messages


def _pair(reader: Schema, writer: Schema, role: str, version: int) -> list[str]:
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # avro leaves __init__ unannotated
    result = checker.get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(kind.value.upper() for kind in result.incompatibilities)
    details = ", ".join(sorted(result.messages))
    locations = ", ".join(sorted(result.locations))
    return [f"{kinds}: {details} at {locations} (the new schema as {role} of version {version})"]
