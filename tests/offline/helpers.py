"""Random events and a brute-force reading of DESIGN §3, for the offline tests."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from streamfs.aggregators import make
from streamfs.definitions import Aggregation, Derived, FeatureView, OneHot
from streamfs.definitions.compile import compile_view, derive
from streamfs.ingest import Event
from streamfs.windows import in_window
from tests.definitions.helpers import USER, purchases

T0 = 1_764_000_000_000  # 2025-11-24T16:00Z
MINUTE = 60_000
CATEGORIES = ("books", "games", "garden")


def rich_view() -> FeatureView:
    """A view exercising every exact function, filters, one-hot, ints and derived features."""
    return FeatureView(
        "user_purchases",
        USER,
        purchases(),
        (
            Aggregation("count_1h", "count", window="1h", hop="5m"),
            Aggregation("count_2h", "count", window="2h", hop="30m"),
            Aggregation("big_30m", "count", window="30m", hop="10m", filter="amount > 50"),
            Aggregation("amount_sum_2h", "sum", "amount", window="2h", hop="30m"),
            Aggregation("items_sum_1h", "sum", "items", window="1h", hop="5m"),
            Aggregation("amount_mean_1h", "mean", "amount", window="1h", hop="5m"),
            Aggregation("amount_min_1h", "min", "amount", window="1h", hop="5m"),
            Aggregation("amount_max_2h", "max", "amount", window="2h", hop="30m"),
            Aggregation("amount_std_2h", "stddev", "amount", window="2h", hop="30m"),
            Aggregation("items_var_1h", "variance", "items", window="1h", hop="5m"),
            Aggregation("first_cat_2h", "first", "category", window="2h", hop="30m"),
            Aggregation("last_cat_1h", "last", "category", window="1h", hop="5m"),
            Aggregation("last_coupon_1h", "last", "coupon", window="1h", hop="5m"),
            Aggregation("cats_2h", "count_distinct", "category", window="2h", hop="30m"),
            Aggregation("cat_1h", "count", OneHot("category", CATEGORIES), window="1h", hop="5m"),
            Aggregation("amount_x_items", "sum", "amount * items", window="1h", hop="5m"),
            Aggregation("p50_amount_1h", "p50", "amount", window="1h", hop="5m"),
            Derived("share_1h", "ratio", ("count_1h", "count_2h")),
            Derived("gap", "difference", ("count_2h", "count_1h")),
            Derived("gap_x_share", "product", ("gap", "share_1h")),
        ),
    )


def random_events(rng: random.Random, n: int, users: int = 6) -> list[Event]:
    """Events out of time order, with ties in time, on partition 0 with growing offsets."""
    events = []
    for offset in range(n):
        user = f"u{rng.randrange(users)}"
        time_ms = T0 + rng.randrange(0, 240) * MINUTE + rng.choice((0, 0, 0, 1, 30_000))
        record = {
            "user_id": user,
            "order_id": f"o{offset}",
            "amount": round(rng.uniform(1, 100), 2),
            "currency": "EUR",
            "category": rng.choice(CATEGORIES),
            "created_at": time_ms,
            "coupon": rng.choice((None, None, "SAVE10", "WELCOME")),
            "items": rng.randrange(1, 5),
            "payment_method": "card",
        }
        events.append(Event(user, time_ms, record, 0, offset))
    return events


def random_queries(rng: random.Random, events: Sequence[Event], n: int) -> list[tuple[str, int]]:
    """Query points: event times exactly (ties), before every event, unknown users, repeats."""
    points: list[tuple[str, int]] = []
    for _ in range(n):
        pick = rng.random()
        if pick < 0.3:
            e = rng.choice(events)
            points.append((str(e.entity_key), e.event_time_ms))
        elif pick < 0.4:
            points.append((f"u{rng.randrange(6)}", T0 - rng.randrange(1, 100) * MINUTE))
        elif pick < 0.5:
            points.append(("nobody", T0 + rng.randrange(0, 300) * MINUTE))
        else:
            points.append((f"u{rng.randrange(6)}", T0 + rng.randrange(0, 400) * MINUTE + 7))
    points += points[: n // 10]  # duplicates
    rng.shuffle(points)
    return points


def brute_force(
    view: FeatureView, events: Sequence[Event], entity: str, t_ms: int
) -> dict[str, Any]:
    """Every feature of ``view`` at ``t_ms`` from the raw events, one aggregator fold each."""
    compiled = compile_view(view)
    mine = [e for e in events if e.entity_key == entity]
    values: dict[str, Any] = {}
    for i, feature in enumerate(compiled.layout.features):
        aggregator = make_for(feature.name, view)
        state = aggregator.initial()
        for e in mine:
            if not in_window(
                e.event_time_ms, t_ms, feature.window.window_ms, feature.window.hop_ms
            ):
                continue
            value = compiled.inputs(e.record)[i]
            if value is None:
                continue
            if aggregator.ordered:
                value = (e.event_time_ms, e.offset, value)
            state = aggregator.add(state, value)
        values[feature.name] = aggregator.result(state)
    return derive(view.derived, values)


def make_for(name: str, view: FeatureView) -> Any:
    for aggregation in view.aggregations:
        if name in aggregation.output_names():
            return make(aggregation.function)
    raise KeyError(name)
