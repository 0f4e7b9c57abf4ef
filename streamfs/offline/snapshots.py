"""Feature snapshots: each entity's feature values as the worker wrote them to Redis.

Per processed batch, for every entity it touched and every view of the source, a
snapshot row records what a read of the online store returned right then: the
values are computed from the very tiles written to Redis by the online read's
own code (:meth:`streamfs.tiles.EntityTiles.query` then the view's derived
features) at the write time. Files live under::

    {root}/v1/view={view}/version={state_version}/date={YYYY-MM-DD}/p{partition}-o{first}-o{last}.parquet

``date`` is the UTC day of the write time (one batch, one date), ``first``/``last``
the offset range of the batch's events in that Kafka partition: the same naming
and replay rules as the event log (:mod:`streamfs.offline.log`). The schema is
explicit, one column per feature with the type the view declares:

==================  ==========================================================
``_entity_key``     the entity (string or int64, as its entity declares)
``_view``           the view's name (string)
``_view_version``   its state version (int32)
*feature columns*   one per feature, named and typed as the view declares
``_event_time_ms``  event time of the newest event behind the values (int64)
``_write_time_ms``  when the values were computed and written (int64)
``_partition``      Kafka partition of the entity's events (int32)
``_offset``         offset of the newest event folded in (int64)
==================  ==========================================================

A replayed batch rewrites its snapshot files with the values of the replay: the
rows are what the online store was given, once per accepted batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa

from streamfs.definitions import FeatureView
from streamfs.definitions.codec import view_to_json
from streamfs.definitions.compile import compile_view
from streamfs.ingest import Event
from streamfs.offline.layout import LAYOUT_VERSION
from streamfs.online import DEFAULT_NAMESPACE, OnlineWrite, ViewLayout, online_key
from streamfs.tiles import EntityTiles

_ARROW_TYPES: Final[dict[str, pa.DataType]] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
}
SNAPSHOT_META: Final = (
    "_entity_key",
    "_view",
    "_view_version",
    "_event_time_ms",
    "_write_time_ms",
    "_partition",
    "_offset",
)


def view_dir(root: str, view: str, state_version: int) -> str:
    """The directory holding every snapshot file of one view state version."""
    return f"{root.rstrip('/')}/{LAYOUT_VERSION}/view={view}/version={state_version}"


@dataclass(frozen=True, slots=True)
class SnapshotView:
    """A served view version compiled for snapshots: its reader layout and file schema."""

    layout: ViewLayout
    schema: pa.Schema
    feature_names: tuple[str, ...]
    # The view's registry definition as JSON text: what rebuilds this in another process
    # (streamfs.offline.process), as compiled closures do not pickle.
    definition: str

    @classmethod
    def of(cls, view: FeatureView, state_version: int) -> SnapshotView:
        """From a registry definition and the state version the worker computes for it
        (:class:`streamfs.plans.ServedView` holds both)."""
        compiled = compile_view(view)
        layout = ViewLayout(
            view.name,
            state_version,
            compiled.layout,
            tuple(d.name for d in compiled.derived),
            compiled.finish,
        )
        types = view.feature_types()
        key = pa.string() if view.entity.key_type == "string" else pa.int64()
        fields = [
            pa.field("_entity_key", key),
            pa.field("_view", pa.string()),
            pa.field("_view_version", pa.int32()),
            *(pa.field(name, _ARROW_TYPES[kind]) for name, kind in types.items()),
            pa.field("_event_time_ms", pa.int64()),
            pa.field("_write_time_ms", pa.int64()),
            pa.field("_partition", pa.int32()),
            pa.field("_offset", pa.int64()),
        ]
        definition = json.dumps(view_to_json(view), sort_keys=True)
        return cls(layout, pa.schema(fields), tuple(types), definition)

    @property
    def name(self) -> str:
        return self.layout.name

    @property
    def version(self) -> int:
        return self.layout.version


def snapshot_table(
    view: SnapshotView,
    events: Sequence[Event],
    writes: Sequence[OnlineWrite],
    write_time_ms: int,
    namespace: str = DEFAULT_NAMESPACE,
    tiles: Mapping[str, EntityTiles] | None = None,
) -> pa.Table:
    """One row per entity of ``events`` that ``writes`` (the batch's online writes) holds
    for ``view``, valued at ``write_time_ms``; ordered by offset.

    Writes are matched to entities by their Redis key, so the caller passes the
    batch's writes as the engine returned them, for any views and partitions.
    Decoding a write's tiles is most of the cost (about 80%): a caller that still
    holds the decoded :class:`EntityTiles` each write was encoded from passes them
    in ``tiles`` (by write key, not mutated until this returns) and skips it.
    """
    layout = view.layout
    by_key = {w.key: w for w in writes}
    partition_of: dict[str | int, int] = {}
    for event in events:
        partition_of[event.entity_key] = event.partition
    columns: dict[str, list[Any]] = {name: [] for name in view.schema.names}
    entities, event_times, partitions, offsets = (
        columns["_entity_key"],
        columns["_event_time_ms"],
        columns["_partition"],
        columns["_offset"],
    )
    features = [(name, columns[name]) for name in view.feature_names]
    finish, tile_layout = layout.finish, layout.layout
    for entity, partition in partition_of.items():
        write = by_key.get(online_key(layout.name, layout.version, entity, namespace))
        if write is None:
            continue
        state = None if tiles is None else tiles.get(write.key)
        if state is None:
            state = EntityTiles.decode(tile_layout, write.tiles)
        values = finish(state.query(write_time_ms))
        entities.append(entity)
        event_times.append(write.last_event_time_ms)
        partitions.append(partition)
        offsets.append(write.offset)
        for name, column in features:
            column.append(values.get(name))
    n = len(entities)
    columns["_view"] = [layout.name] * n
    columns["_view_version"] = [layout.version] * n
    columns["_write_time_ms"] = [write_time_ms] * n
    table = pa.Table.from_arrays(
        [pa.array(columns[f.name], f.type) for f in view.schema], schema=view.schema
    )
    return table.sort_by("_offset") if n > 1 else table
