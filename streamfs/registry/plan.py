"""Planning a change to the registry: validate everything, then compute the records to write.

Pure: a plan is made from a :class:`RegistryState` and the definitions wanted, and
is either refused as a whole (:class:`DefinitionError`, naming the definition and
the field) or yields every record at once. The store writes a plan's records in
one Kafka transaction, so nothing is ever applied half-way.

An apply makes the registry hold exactly a topology: definitions missing from the
registry are created, different ones get a new version (with what changed),
identical ones are left alone (a second apply writes nothing), and definitions
that an earlier apply created but the topology no longer has are removed.
Features registered from SQL (:func:`plan_register`) belong to no topology and an
apply leaves them alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from streamfs.definitions import Aggregation, Entity, FeatureView, Source
from streamfs.definitions.codec import JSON, entity_to_json, source_to_json, view_to_json
from streamfs.definitions.expr import DataType
from streamfs.errors import DefinitionError
from streamfs.registry.records import RETIRE, Record, RegistryError
from streamfs.registry.semantics import diff, feature_key, view_state_key
from streamfs.registry.state import RegistryState

_T = TypeVar("_T", Entity, Source)


@dataclass(frozen=True, slots=True)
class Topology:
    """The definitions an apply wants registered (a view's entity and source count too)."""

    entities: tuple[Entity, ...] = ()
    sources: tuple[Source, ...] = ()
    views: tuple[FeatureView, ...] = ()

    @classmethod
    def of(cls, objects: Iterable[object]) -> Topology:
        """Collect the definitions among ``objects``, adding each view's entity and source."""
        entities: list[Entity] = []
        sources: list[Source] = []
        views: list[FeatureView] = []
        for obj in objects:
            if isinstance(obj, FeatureView):
                views.append(obj)
                entities.append(obj.entity)
                sources.append(obj.source)
            elif isinstance(obj, Entity):
                entities.append(obj)
            elif isinstance(obj, Source):
                sources.append(obj)
        return cls(_unique("entity", entities), _unique("source", sources), _unique_views(views))


def _unique(kind: str, items: Sequence[_T]) -> tuple[_T, ...]:
    by_name: dict[str, _T] = {}
    for item in items:
        known = by_name.get(item.name)
        if known is None:
            by_name[item.name] = item
        elif known != item:
            raise DefinitionError(
                f"duplicate name: two different {kind} definitions are named {item.name!r}"
            )
    return tuple(by_name.values())


def _unique_views(views: Sequence[FeatureView]) -> tuple[FeatureView, ...]:
    by_name: dict[str, FeatureView] = {}
    for view in views:
        if view.name in by_name and by_name[view.name] is not view:
            raise DefinitionError(f"duplicate name: two feature views are named {view.name!r}")
        by_name[view.name] = view
    return tuple(by_name.values())


@dataclass(frozen=True, slots=True)
class Step:
    """One line of a plan: create, change or remove a definition (or retire a version)."""

    action: str  # "create", "change", "remove", "retire"
    kind: str
    name: str
    version: int
    changes: tuple[str, ...] = ()
    new_state: bool = False  # a view change that starts a new computed state


@dataclass(slots=True)
class Plan:
    steps: list[Step] = field(default_factory=list)
    unchanged: list[tuple[str, str]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.records


def validate(views: Sequence[FeatureView], state: RegistryState, replacing: set[str]) -> None:
    """Checks across views: unique feature names, derived inputs that exist, their types.

    ``views`` are to be registered; ``replacing`` names current views they replace or
    remove (their features are free to reuse). The rest of the registry stays.
    """
    owner: dict[str, str] = {}
    types: dict[str, DataType] = {}
    for name, info in state.features().items():
        if info.view not in replacing:
            owner[name] = info.view
            types[name] = info.data_type  # type: ignore[assignment]  # registered: a DataType
    for view in views:
        for name, kind in view.feature_types().items():
            if name in owner:
                raise DefinitionError(
                    f"feature view {view.name!r}, feature {name!r}: duplicate name: feature"
                    f" {name!r} is already defined by feature view {owner[name]!r}"
                )
            owner[name] = view.name
            types[name] = kind
    for view in views:
        for feature in view.derived:
            where = f"feature view {view.name!r}, feature {feature.name!r}"
            missing = [i for i in feature.inputs if i not in types]
            if missing:
                raise DefinitionError(
                    f"{where}: derived input {', '.join(map(repr, missing))} does not exist"
                    " (not a feature of any view)"
                )
            try:
                kind = feature.output_type([types[i] for i in feature.inputs])
            except DefinitionError as exc:
                raise DefinitionError(f"{where}: {exc}") from exc
            if feature.data_type is not None and feature.data_type != kind:
                raise DefinitionError(
                    f"{where}: type mismatch: data_type is {feature.data_type} but {feature.op}"
                    f" of its inputs is {kind}"
                )


class _Planner:
    def __init__(self, state: RegistryState, who: str, when_ms: int, origin: str) -> None:
        self.state, self.who, self.when_ms, self.origin = state, who, when_ms, origin
        self.plan = Plan()

    def put(self, kind: str, name: str, spec: JSON, **extra: object) -> Record | None:
        latest = self.state.latest(kind, name)
        if latest is not None and not latest.removed and latest.spec == spec:
            self.plan.unchanged.append((kind, name))
            return None
        version = 1 if latest is None else latest.version + 1
        changes: tuple[str, ...] = ("created",)
        action = "create"
        if latest is not None and not latest.removed:
            action, changes = "change", tuple(diff(latest.spec, spec))
        record = Record(
            kind,
            name,
            version,
            spec,
            self.who,
            self.when_ms,
            changes,
            self.origin,
            **extra,  # type: ignore[arg-type]  # extra: the optional Record fields
        )
        self.plan.records.append(record)
        self.plan.steps.append(Step(action, kind, name, version, changes))
        return record

    def put_view(self, view: FeatureView, sql: dict[str, str] | None = None) -> None:
        spec = view_to_json(view)
        latest = self.state.latest("view", view.name)
        previous = None if latest is None or latest.removed else latest
        feature_versions: dict[str, int] = {}
        specs = {f["name"]: f for f in spec["features"]}
        for feature in view.features:
            outputs = (
                feature.output_names() if isinstance(feature, Aggregation) else (feature.name,)
            )
            meaning = feature_key(specs[feature.name], spec)
            for output in outputs:
                known = self.state.latest_feature_version(output)
                if known is None:
                    feature_versions[output] = 1
                else:
                    number, before = known
                    feature_versions[output] = number if before == meaning else number + 1
        if previous is not None and view_state_key(previous.spec) == view_state_key(spec):
            state_version = previous.state_version
        else:
            state_version = 1 if latest is None else latest.version + 1
        record = self.put(
            "view",
            view.name,
            spec,
            state_version=state_version,
            feature_versions=feature_versions,
            sql=sql or {},
        )
        if record is not None and record.state_version == record.version and previous is not None:
            last = self.plan.steps[-1]
            self.plan.steps[-1] = Step(
                last.action, last.kind, last.name, last.version, last.changes, new_state=True
            )

    def remove(self, kind: str, name: str) -> None:
        latest = self.state.latest(kind, name)
        assert latest is not None
        version = latest.version + 1
        self.plan.records.append(
            Record(kind, name, version, None, self.who, self.when_ms, ("removed",), self.origin)
        )
        self.plan.steps.append(Step("remove", kind, name, version, ("removed",)))


def plan_apply(state: RegistryState, topology: Topology, who: str, when_ms: int) -> Plan:
    """The records that make the registry hold ``topology`` (see the module docstring)."""
    wanted = {v.name for v in topology.views}
    removed_views = {
        n for n in state.names("view") if n not in wanted and _origin(state, "view", n) == "apply"
    }
    validate(topology.views, state, wanted | removed_views)
    planner = _Planner(state, who, when_ms, "apply")
    for entity in topology.entities:
        planner.put("entity", entity.name, entity_to_json(entity))
    for source in topology.sources:
        planner.put("source", source.name, source_to_json(source))
    for view in topology.views:
        if _origin(state, "view", view.name) == "sql":
            raise DefinitionError(
                f"feature view {view.name!r}: duplicate name: a feature registered from SQL"
                " already uses this view name"
            )
        planner.put_view(view)
    for name in sorted(removed_views):
        planner.remove("view", name)
    kept = [state.view(n) for n in state.names("view") if n not in wanted | removed_views]
    for kind, names, used in (
        ("entity", {e.name for e in topology.entities}, {v.entity.name for v in kept}),
        ("source", {s.name for s in topology.sources}, {v.source.name for v in kept}),
    ):
        for name in state.names(kind):
            if name not in names and name not in used and _origin(state, kind, name) == "apply":
                planner.remove(kind, name)
    return planner.plan


def plan_register(
    state: RegistryState, view: FeatureView, sql: dict[str, str], who: str, when_ms: int
) -> Plan:
    """The records that register (or re-register) one SQL-defined feature's view."""
    if _origin(state, "view", view.name) == "apply":
        raise DefinitionError(
            f"feature {view.name!r}: duplicate name: feature view {view.name!r} comes from a"
            " topology; pick another name"
        )
    validate([view], state, {view.name})
    planner = _Planner(state, who, when_ms, "sql")
    planner.put_view(view, sql)
    return planner.plan


def plan_retire(state: RegistryState, view: str, version: int, who: str, when_ms: int) -> Plan:
    """Stop serving an old version of a view (the latest is served until the view goes)."""
    record = state.version("view", view, version)
    latest = state.latest("view", view)
    if record is None or record.removed or latest is None:
        raise RegistryError(f"feature view {view!r} has no version {version}")
    if latest.version == version:
        raise RegistryError(
            f"feature view {view!r}: version {version} is the latest; remove the view instead"
        )
    plan = Plan()
    if not state.is_retired(view, version):
        plan.records.append(Record(RETIRE, view, version, None, who, when_ms, ("retired",)))
        plan.steps.append(Step("retire", "view", view, version, ("retired",)))
    return plan


def _origin(state: RegistryState, kind: str, name: str) -> str | None:
    record = state.current(kind, name)
    return None if record is None else record.origin


__all__ = ["Plan", "Step", "Topology", "plan_apply", "plan_register", "plan_retire", "validate"]
