"""The registry as it stands: every record folded into versions per definition, and queries.

Built by replaying records in log order (:meth:`RegistryState.apply`); pure, so the
planning and reading logic is tested without Kafka. Readers get definitions back as
objects (:mod:`streamfs.definitions.codec`), features with their versions, and
lineage: source topic and schema subject -> feature view -> feature, and derived
feature -> its inputs (upstream) and -> the derived features that use it (downstream).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streamfs.definitions import Aggregation, Derived, FeatureView
from streamfs.definitions.codec import JSON, view_from_json
from streamfs.registry.records import KINDS, RETIRE, Record, RegistryError
from streamfs.registry.semantics import feature_key


@dataclass(frozen=True, slots=True)
class FeatureVersion:
    """One meaning of a feature: where it was first defined, by whom, when."""

    feature: str
    version: int
    view: str
    view_version: int
    state_version: int
    who: str
    when_ms: int
    spec: JSON
    meaning: JSON  # semantics.feature_key: what versions are compared by
    served: bool


@dataclass(frozen=True, slots=True)
class FeatureInfo:
    """A feature as currently registered."""

    name: str
    version: int
    view: str
    view_version: int
    data_type: str
    kind: str  # "aggregation" or "derived"
    spec: JSON
    description: str
    origin: str
    sql: str | None


@dataclass(frozen=True, slots=True)
class Lineage:
    feature: str
    view: str
    entity: str
    source: str
    topic: str
    schema_subject: str
    inputs: tuple[str, ...]  # a derived feature's inputs (direct)
    upstream: tuple[str, ...]  # every feature it is computed from, transitively
    downstream: tuple[str, ...]  # derived features that use it


class RegistryState:
    """Versions of every definition, folded from the registry's records."""

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._versions: dict[tuple[str, str], dict[int, Record]] = {}
        self._retired: dict[str, set[int]] = {}
        for record in records:
            self.apply(record)

    def apply(self, record: Record) -> None:
        if record.kind == RETIRE:
            self._retired.setdefault(record.name, set()).add(record.version)
        elif record.kind in KINDS:
            self._versions.setdefault(record.key, {})[record.version] = record
        # Unknown kinds come from newer writers: skipped, so old readers keep working.

    # --- definitions -------------------------------------------------------------------

    def history(self, kind: str, name: str) -> list[Record]:
        """Every version of a definition, oldest first (removals included)."""
        return [v for _, v in sorted(self._versions.get((kind, name), {}).items())]

    def latest(self, kind: str, name: str) -> Record | None:
        versions = self._versions.get((kind, name))
        return versions[max(versions)] if versions else None

    def current(self, kind: str, name: str) -> Record | None:
        """The latest version, or ``None`` if there is none or it is a removal."""
        record = self.latest(kind, name)
        return None if record is None or record.removed else record

    def names(self, kind: str) -> list[str]:
        """Names of the definitions of ``kind`` that exist now (not removed)."""
        return sorted(n for k, n in self._versions if k == kind and self.current(k, n))

    def version(self, kind: str, name: str, version: int) -> Record | None:
        return self._versions.get((kind, name), {}).get(version)

    def view(self, name: str, version: int | None = None) -> FeatureView:
        record = (
            self.current("view", name) if version is None else self.version("view", name, version)
        )
        if record is None or record.removed:
            at = "" if version is None else f" version {version}"
            raise RegistryError(f"feature view {name!r}{at} is not registered")
        return view_from_json(record.spec)

    def is_retired(self, view: str, version: int) -> bool:
        return version in self._retired.get(view, set())

    def served_state_versions(self, view: str) -> list[int]:
        """State versions that workers compute for ``view``: the latest one plus every older
        one not retired (an old meaning keeps being served until it is retired)."""
        latest = self.latest("view", view)
        if latest is None or latest.removed:
            return []
        served = {latest.state_version}
        for record in self.history("view", view):
            if not record.removed and not self.is_retired(view, record.version):
                served.add(record.state_version)
        return sorted(served)

    # --- features ----------------------------------------------------------------------

    def features(self) -> dict[str, FeatureInfo]:
        """Every feature of every current view, by name."""
        out: dict[str, FeatureInfo] = {}
        for name in self.names("view"):
            record = self.current("view", name)
            assert record is not None
            view = view_from_json(record.spec)
            types = view.feature_types()
            specs = {f["name"]: f for f in record.spec["features"]}
            for feature in view.features:
                outputs = (
                    feature.output_names() if isinstance(feature, Aggregation) else (feature.name,)
                )
                for output in outputs:
                    out[output] = FeatureInfo(
                        name=output,
                        version=record.feature_versions.get(output, 1),
                        view=name,
                        view_version=record.version,
                        data_type=types[output],
                        kind="derived" if isinstance(feature, Derived) else "aggregation",
                        spec=specs[feature.name],
                        description=feature.description,
                        origin=record.origin,
                        sql=record.sql.get(output),
                    )
        return out

    def feature_history(self, feature: str) -> list[FeatureVersion]:
        """Each version of a feature's meaning, oldest first, across every view it lived in."""
        seen: dict[int, FeatureVersion] = {}
        for (kind, view_name), versions in self._versions.items():
            if kind != "view":
                continue
            for number in sorted(versions):
                record = versions[number]
                fv = record.feature_versions.get(feature)
                if record.removed or fv is None or fv in seen:
                    continue
                spec = next(
                    (
                        f
                        for f in record.spec["features"]
                        if f["name"] == feature or _expands_to(f, feature)
                    ),
                    None,
                )
                seen[fv] = FeatureVersion(
                    feature=feature,
                    version=fv,
                    view=view_name,
                    view_version=number,
                    state_version=record.state_version,
                    who=record.who,
                    when_ms=record.when_ms,
                    spec=spec,
                    meaning=None if spec is None else feature_key(spec, record.spec),
                    served=record.state_version in self.served_state_versions(view_name),
                )
        return [seen[v] for v in sorted(seen)]

    def latest_feature_version(self, feature: str) -> tuple[int, JSON] | None:
        """The newest version number of a feature and what it meant (for planning)."""
        history = self.feature_history(feature)
        return (history[-1].version, history[-1].meaning) if history else None

    def lineage(self, feature: str) -> Lineage:
        features = self.features()
        info = features.get(feature)
        if info is None:
            raise RegistryError(f"feature {feature!r} is not registered")
        view = self.view(info.view)
        derived = {f.name: f for f in view.derived}
        for other in features.values():
            if other.kind == "derived" and other.name not in derived:
                for d in self.view(other.view).derived:
                    derived[d.name] = d
        inputs = derived[feature].inputs if feature in derived else ()
        upstream: list[str] = []
        stack = list(inputs)
        while stack:
            name = stack.pop(0)
            if name not in upstream:
                upstream.append(name)
                stack.extend(derived[name].inputs if name in derived else ())
        downstream = tuple(sorted(d.name for d in derived.values() if feature in d.inputs))
        return Lineage(
            feature=feature,
            view=info.view,
            entity=view.entity.name,
            source=view.source.name,
            topic=view.source.topic,
            schema_subject=view.source.schema_subject,
            inputs=tuple(inputs),
            upstream=tuple(upstream),
            downstream=downstream,
        )


def _expands_to(spec: JSON, feature: str) -> bool:
    """Whether a one-hot aggregation's spec produces ``feature``."""
    value = spec.get("input")
    if not (isinstance(value, dict) and "one_hot" in value):
        return False
    from streamfs.definitions.features import category_name

    prefix = spec["name"] + "_"
    return feature.startswith(prefix) and feature[len(prefix) :] in {
        category_name(c) for c in value["one_hot"]["categories"]
    }
