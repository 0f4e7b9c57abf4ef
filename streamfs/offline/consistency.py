"""Online against offline: the same features, the same entities, the same instant.

:func:`compare` takes online rows (:class:`streamfs.online.OnlineRow`, each valued
at its ``as_of_ms``) and the offline values at those instants and lists every
feature that differs. Equal means equal, except for float rounding (relative
1e-9: sums merged in another order) and the two sketches online switches to past
a size: count_distinct past 1,000 distinct values (HLL, within 5%) and
percentiles past 200 values (KLL, within about 1.3% of rank, compared here as 5%
of value). :func:`check` composes the reads; the rest is pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamfs.definitions import FeatureView
from streamfs.online import UnknownFeatureError
from streamfs.settings import Settings

FLOAT_REL = 1e-9
SKETCH_REL = 0.05


@dataclass(frozen=True, slots=True)
class Mismatch:
    entity: str | int
    feature: str
    as_of_ms: int
    online: Any
    offline: Any

    def __str__(self) -> str:
        return (
            f"{self.entity} {self.feature} at {self.as_of_ms}: online {self.online!r}"
            f" offline {self.offline!r}"
        )


def sketched(view: FeatureView) -> frozenset[str]:
    """The features whose online value may be a sketch's estimate."""
    names: set[str] = set()
    for aggregation in view.aggregations:
        f = aggregation.function
        if f == "count_distinct" or f == "percentile" or (f.startswith("p") and f[1:2].isdigit()):
            names.update(aggregation.output_names())
    return frozenset(names)


def equal(online: Any, offline: Any, rel: float = FLOAT_REL) -> bool:
    if online is None or offline is None:
        return online is None and offline is None
    numbers = isinstance(online, int | float) and isinstance(offline, int | float)
    inexact = isinstance(online, float) or isinstance(offline, float) or rel > FLOAT_REL
    if numbers and inexact:
        return math.isclose(online, offline, rel_tol=rel, abs_tol=1e-9)
    return bool(online == offline)


def compare(
    features: Sequence[str],
    online: Sequence[tuple[str | int, int, Mapping[str, Any]]],
    offline: Sequence[Mapping[str, Any]],
    approximate: frozenset[str] = frozenset(),
) -> list[Mismatch]:
    """``online`` as ``(entity, as_of_ms, values)``, ``offline`` the rows at those instants."""
    out = []
    for (entity, as_of, values), row in zip(online, offline, strict=True):
        for feature in features:
            rel = SKETCH_REL if feature.rpartition(":")[2] in approximate else FLOAT_REL
            if not equal(values[feature], row[feature], rel):
                out.append(Mismatch(entity, feature, as_of, values[feature], row[feature]))
    return out


def check(
    settings: Settings,
    view_name: str,
    sample: int,
    root: str,
    seed: int = 0,
    clock: Callable[[], int] | None = None,
) -> tuple[list[Mismatch], int]:
    """Sample ``sample`` entities of the view from the log, compare online now with offline
    at the same instant; returns the mismatches and how many entities were checked."""
    import random
    import time

    import pyarrow as pa

    from streamfs.offline.retrieval import get_historical_features, log_entities
    from streamfs.online import OnlineRow
    from streamfs.plans import newest_views
    from streamfs.store import FeatureStore

    store = FeatureStore(settings, clock=clock)
    views = newest_views(store.registry_state())
    view = next((v for v in views if v.name == view_name), None)
    if view is None:
        raise UnknownFeatureError(f"feature view {view_name!r} is not served")
    entities = log_entities(root, view)
    rng = random.Random(seed)  # noqa: S311  # sampling, not secrets
    chosen = rng.sample(entities, min(sample, len(entities)))
    if not chosen:
        return [], 0
    features = [f"{view.name}:{name}" for name in view.feature_types()]
    now = (clock or (lambda: time.time_ns() // 1_000_000))()
    rows = store.get_online_features(chosen, features, at_ms=now)
    assert isinstance(rows, list)
    online: list[OnlineRow] = rows
    key = view.entity.join_keys[0]
    entity_df = pa.table({key: chosen, "event_timestamp": [r.as_of_ms for r in online]})
    offline = get_historical_features(entity_df, features, views, root).to_pylist()
    found = compare(
        features, [(r.entity_key, r.as_of_ms, r.values) for r in online], offline, sketched(view)
    )
    return found, len(chosen)
