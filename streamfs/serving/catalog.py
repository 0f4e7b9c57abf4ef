"""What the server knows of the registry: a snapshot, reloaded in the background.

A :class:`Catalog` is immutable; the server swaps in a new one every refresh, so a
request reads one consistent snapshot with no lock. It turns registry objects into
the plain JSON the API and the web view show (views, features, versions, lineage).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamfs.definitions import Source
from streamfs.definitions.codec import source_from_json
from streamfs.online import Selection, ViewLayout
from streamfs.push import UnknownSourceError
from streamfs.registry.records import RegistryError
from streamfs.registry.state import RegistryState

MAX_SELECTIONS = 4_096  # distinct feature lists remembered per snapshot


class NotFoundError(RegistryError):
    """A view or feature the registry does not hold; the message names it."""


@dataclass(frozen=True, slots=True)
class Catalog:
    state: RegistryState
    layouts: dict[str, ViewLayout]  # the newest served state version of each view
    sources: dict[str, Source]
    loaded_at_ms: int
    # Feature lists resolved against ``layouts``, by the list: a hot request resolves once.
    _selections: dict[tuple[str, ...], Selection] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def of(cls, state: RegistryState, now_ms: int, previous: Catalog | None = None) -> Catalog:
        """The snapshot of ``state``; a view whose served definition did not change keeps
        ``previous``'s layout object, so values cached for it stay usable (the value
        cache trusts only the very layout it computed with)."""
        from streamfs.plans import reader_layouts
        from streamfs.store import keep_unchanged_layouts

        sources = {}
        for name in state.names("source"):
            record = state.current("source", name)
            if record is not None:
                sources[name] = source_from_json(record.spec)
        layouts = reader_layouts(state)
        if previous is not None:
            keep_unchanged_layouts(previous.state, previous.layouts, state, layouts)
        return cls(state, layouts, sources, now_ms)

    @classmethod
    def empty(cls) -> Catalog:
        return cls(RegistryState(), {}, {}, 0)

    def views(self) -> list[dict[str, Any]]:
        """Every current view in brief."""
        return [self._view_summary(name) for name in self.state.names("view")]

    def _view_summary(self, name: str) -> dict[str, Any]:
        record = self.state.current("view", name)
        if record is None:
            raise NotFoundError(f"feature view {name!r} is not registered")
        view = self.state.view(name)
        layout = self.layouts.get(name)
        return {
            "name": name,
            "version": record.version,
            "state_version": record.state_version,
            "entity": view.entity.name,
            "join_key": view.entity.join_keys[0],
            "source": view.source.name,
            "topic": view.source.topic,
            "description": view.description,
            "owner": view.owner,
            "tags": dict(view.tags),
            "features": list(layout.feature_names) if layout else [],
            "ttl_ms": view.ttl_ms,
        }

    def view(self, name: str) -> dict[str, Any]:
        """One view with its versions and the features it serves."""
        out = self._view_summary(name)
        infos = self.state.features()
        out["versions"] = [
            {
                "version": r.version,
                "state_version": r.state_version,
                "who": r.who,
                "when_ms": r.when_ms,
                "changes": list(r.changes),
                "removed": r.removed,
                "retired": self.state.is_retired(name, r.version),
            }
            for r in self.state.history("view", name)
        ]
        out["features"] = [
            _feature_summary(infos[f]) if f in infos else {"name": f} for f in out["features"]
        ]
        return out

    def features(self) -> list[dict[str, Any]]:
        infos = self.state.features()
        return [_feature_summary(infos[name]) for name in sorted(infos)]

    def feature(self, name: str) -> dict[str, Any]:
        """One feature: definition, every version of its meaning, lineage."""
        info = self.state.features().get(name)
        if info is None:
            raise NotFoundError(f"feature {name!r} is not registered")
        return {
            **dataclasses.asdict(info),
            "versions": [dataclasses.asdict(v) for v in self.state.feature_history(name)],
            "lineage": dataclasses.asdict(self.state.lineage(name)),
        }

    def source(self, name: str) -> Source:
        source = self.sources.get(name)
        if source is None:
            known = ", ".join(sorted(self.sources)) or "none"
            raise UnknownSourceError(f"unknown source {name!r} (registered: {known})")
        return source

    def selection(self, features: Sequence[str]) -> Selection:
        """``features`` resolved against this snapshot's views (memoized; unknown names
        raise :class:`~streamfs.online.UnknownFeatureError` every time)."""
        key = tuple(features)
        selection = self._selections.get(key)
        if selection is None:
            selection = Selection.of(self.layouts, key)
            if len(self._selections) >= MAX_SELECTIONS:
                self._selections.clear()
            self._selections[key] = selection
        return selection

    def layout(self, name: str) -> ViewLayout:
        layout = self.layouts.get(name)
        if layout is None:
            raise NotFoundError(f"feature view {name!r} is not registered")
        return layout


def _feature_summary(info: Any) -> dict[str, Any]:
    return {
        "name": info.name,
        "version": info.version,
        "view": info.view,
        "data_type": info.data_type,
        "kind": info.kind,
        "description": info.description,
    }
