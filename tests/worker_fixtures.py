"""A hand-built feature view on the sample `purchase` events, for engine and worker tests.

The definitions layer compiles user declarations to the same :class:`ViewPlan`; these
tests fix one plan so they exercise the engine alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streamfs.aggregators import make
from streamfs.definitions import Source
from streamfs.engine import ViewPlan
from streamfs.online import ViewLayout
from streamfs.tiles import Feature, Layout
from streamfs.windows import WindowSpec

REPO = Path(__file__).resolve().parents[1]
PURCHASE_SCHEMA = (REPO / "avro_schemas" / "purchase.avsc").read_text()
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# name, function, input column (None: count the event), window, hop
FEATURES: tuple[tuple[str, str, str | None, int, int], ...] = (
    ("purchases_1h", "count", None, HOUR_MS, 5 * 60_000),
    ("amount_sum_1h", "sum", "amount", HOUR_MS, 5 * 60_000),
    ("purchases_24h", "count", None, DAY_MS, HOUR_MS),
    ("amount_mean_24h", "mean", "amount", DAY_MS, HOUR_MS),
    ("amount_max_24h", "max", "amount", DAY_MS, HOUR_MS),
    ("amount_stddev_7d", "stddev", "amount", 7 * DAY_MS, DAY_MS),
    ("categories_7d", "count_distinct", "category", 7 * DAY_MS, DAY_MS),
    ("last_category_7d", "last", "category", 7 * DAY_MS, DAY_MS),
)


def purchase_source(topic: str, lateness_ms: int = HOUR_MS, skew_ms: int = 60_000) -> Source:
    return Source(
        name="purchases",
        topic=topic,
        schema_subject=f"{topic}-value",
        key_field="user_id",
        event_time_field="created_at",
        allowed_lateness_ms=lateness_ms,
        max_future_skew_ms=skew_ms,
        reader_schema=PURCHASE_SCHEMA,
    )


def _inputs(record: Mapping[str, Any]) -> Sequence[Any]:
    return [1 if column is None else record[column] for _n, _f, column, _w, _h in FEATURES]


def purchase_plan(source: Source, version: int = 1) -> ViewPlan:
    layout = Layout.of(
        [
            Feature(name, make(function), WindowSpec(window, hop))
            for name, function, _c, window, hop in FEATURES
        ]
    )
    return ViewPlan(
        ViewLayout("user_purchases", version, layout),
        source,
        _inputs,
        ttl_ms=8 * DAY_MS,
    )


def brute_force(events: Sequence[tuple[int, int, Mapping[str, Any]]], t_ms: int) -> dict[str, Any]:
    """Every feature at ``t_ms`` from raw ``(event_time_ms, offset, record)`` by DESIGN §3."""
    out: dict[str, Any] = {}
    for name, function, column, window, hop in FEATURES:
        start = math.floor((t_ms - window) / hop) * hop
        inside = sorted((e for e in events if start <= e[0] <= t_ms), key=lambda e: e[:2])
        values = [1 if column is None else e[2][column] for e in inside]
        if function == "count":
            out[name] = len(values)
        elif function == "sum":
            out[name] = sum(values)
        elif function == "mean":
            out[name] = sum(values) / len(values) if values else None
        elif function == "max":
            out[name] = max(values) if values else None
        elif function == "stddev":
            if values:
                mean = sum(values) / len(values)
                out[name] = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            else:
                out[name] = None
        elif function == "count_distinct":
            out[name] = len(set(values))
        elif function == "last":
            out[name] = values[-1] if values else None
    return out


def assert_close(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Equal, with float functions compared to 1e-9 relative (summation order differs)."""
    assert actual.keys() == expected.keys()
    for name, want in expected.items():
        got = actual[name]
        if isinstance(want, float) and got is not None:
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), (name, got, want)
        else:
            assert got == want, (name, got, want)
