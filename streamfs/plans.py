"""From the registry to the runtime: which view versions are served, compiled for the
engine (:class:`~streamfs.engine.ViewPlan`) and for readers (:class:`ViewLayout`).

A view's *state version* names its computed state (Redis keys, table keys): a change
of meaning starts a new state version, and older ones keep being computed and served
until they are retired (:meth:`RegistryState.served_state_versions`). Readers read the
newest served state version of each view.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamfs.definitions import FeatureView
from streamfs.definitions.codec import view_from_json
from streamfs.definitions.compile import CompiledView, compile_view
from streamfs.engine import ViewPlan
from streamfs.online import ViewLayout
from streamfs.registry.state import RegistryState


@dataclass(frozen=True, slots=True)
class ServedView:
    view: FeatureView
    state_version: int


def served_views(state: RegistryState) -> list[ServedView]:
    """Every (view, state version) the workers must compute, in name then version order."""
    out = []
    for name in state.names("view"):
        for state_version in state.served_state_versions(name):
            # The newest definition carrying this state version defines it.
            records = [
                r
                for r in state.history("view", name)
                if not r.removed and r.state_version == state_version
            ]
            if records:
                out.append(ServedView(view_from_json(records[-1].spec), state_version))
    return out


def _layout(served: ServedView, compiled: CompiledView) -> ViewLayout:
    return ViewLayout(
        served.view.name,
        served.state_version,
        compiled.layout,
        tuple(d.name for d in compiled.derived),
        compiled.finish,
    )


def layout_of(served: ServedView) -> ViewLayout:
    return _layout(served, compile_view(served.view))


def view_plan(served: ServedView, snapshots: bool = False) -> ViewPlan:
    """The engine's plan of ``served``; ``snapshots``: with its offline snapshot schema,
    so the worker appends its feature values to the offline log per batch."""
    from streamfs.offline.snapshots import SnapshotView

    compiled = compile_view(served.view)
    return ViewPlan(
        _layout(served, compiled),
        served.view.source,
        compiled.inputs,
        served.view.ttl_ms,
        snapshot=SnapshotView.of(served.view, served.state_version) if snapshots else None,
    )


def _newest_served(state: RegistryState) -> dict[str, ServedView]:
    newest: dict[str, ServedView] = {}
    for served in served_views(state):
        newest[served.view.name] = served  # ascending versions: the last one wins
    return newest


def newest_views(state: RegistryState) -> list[FeatureView]:
    """The newest served definition of each view: what readers (online, offline) answer from."""
    return [s.view for s in _newest_served(state).values()]


def reader_layouts(state: RegistryState) -> dict[str, ViewLayout]:
    """For readers: the newest served state version of each view, by view name."""
    return {name: layout_of(s) for name, s in _newest_served(state).items()}
