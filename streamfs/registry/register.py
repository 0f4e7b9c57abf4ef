"""``register_feature``: one feature from SQL text, as a one-feature view of its own.

``FROM`` names a registered source (by name, or by topic); the window's time column
must be that source's event-time field; ``GROUP BY``, if given, its key field. The
entity is the registered entity whose single join key is the source's key field
(or the one named). The view takes the feature's name, so re-registering the same
name with the same SQL changes nothing, and with a different window makes version 2.
"""

from __future__ import annotations

from streamfs.definitions import Aggregation, Entity, FeatureView, Source
from streamfs.definitions.codec import entity_from_json, source_from_json
from streamfs.definitions.features import Duration, check_data_type
from streamfs.definitions.sql import parse_feature
from streamfs.errors import DefinitionError
from streamfs.registry.state import RegistryState


def _source(state: RegistryState, name: str, where: str) -> Source:
    record = state.current("source", name)
    if record is not None:
        return source_from_json(record.spec)
    for source_name in state.names("source"):
        record = state.current("source", source_name)
        if record is not None and record.spec["topic"] == name:
            return source_from_json(record.spec)
    known = ", ".join(state.names("source")) or "none; run `streamfs apply` first"
    raise DefinitionError(f"{where}: FROM {name!r} is not a registered source (sources: {known})")


def _entity(state: RegistryState, source: Source, entity: str | None, where: str) -> Entity:
    entities = [
        entity_from_json(r.spec) for n in state.names("entity") if (r := state.current("entity", n))
    ]
    if entity is not None:
        match = [e for e in entities if e.name == entity]
        if not match:
            raise DefinitionError(f"{where}: entity {entity!r} is not registered")
        return match[0]
    match = [e for e in entities if e.join_keys == (source.key_field,)]
    if len(match) != 1:
        names = ", ".join(e.name for e in match) or "none"
        raise DefinitionError(
            f"{where}: cannot tell the entity of source {source.name!r} (entities keyed by"
            f" {source.key_field!r}: {names}); pass entity="
        )
    return match[0]


def view_from_sql(
    state: RegistryState,
    name: str,
    description: str,
    data_type: str,
    transformation: str,
    *,
    entity: str | None = None,
    hop: Duration | None = None,
    owner: str = "",
) -> FeatureView:
    """The one-feature view that ``transformation`` defines (see the module docstring)."""
    where = f"feature {name!r}"
    check_data_type(where, data_type)
    parsed = parse_feature(transformation, where)
    source = _source(state, parsed.source, where)
    if parsed.time_column != source.event_time_field:
        raise DefinitionError(
            f"{where}: the window is on {parsed.time_column!r}, but the event time of source"
            f" {source.name!r} is {source.event_time_field!r}"
        )
    if parsed.group_by and parsed.group_by != (source.key_field,):
        raise DefinitionError(
            f"{where}: GROUP BY {', '.join(parsed.group_by)}: features are per entity, grouped"
            f" by the key field {source.key_field!r} only"
        )
    aggregation = Aggregation(
        name=name,
        function=parsed.function,
        input=parsed.input,
        window=parsed.window_ms,
        hop=hop,
        filter=parsed.filter,
        data_type=data_type,
        description=description,
    )
    return FeatureView(
        name=name,
        entity=_entity(state, source, entity, where),
        source=source,
        features=(aggregation,),
        owner=owner,
        description=description,
    )
