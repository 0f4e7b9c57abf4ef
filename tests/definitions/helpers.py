"""Sample definitions on the shop schemas, for the definition and registry tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamfs.definitions import Aggregation, Derived, Entity, FeatureView, Source

REPO = Path(__file__).resolve().parents[2]
PURCHASE_SCHEMA = (REPO / "avro_schemas" / "purchase.avsc").read_text()
PAGE_VIEW_SCHEMA = (REPO / "avro_schemas" / "page_view.avsc").read_text()

USER = Entity("user", ("user_id",))


def purchases(**overrides: Any) -> Source:
    fields: dict[str, Any] = {
        "name": "purchases",
        "topic": "purchase",
        "schema_subject": "purchase-value",
        "key_field": "user_id",
        "event_time_field": "created_at",
        "allowed_lateness_ms": 3_600_000,
        "max_future_skew_ms": 60_000,
        "reader_schema": PURCHASE_SCHEMA,
    }
    return Source(**{**fields, **overrides})


def page_views() -> Source:
    return Source(
        "page_views", "page_view", "page_view-value", "user_id", "viewed_at",
        3_600_000, 60_000, PAGE_VIEW_SCHEMA,
    )  # fmt: skip


def purchase_view(window_1h: str = "1h", **overrides: Any) -> FeatureView:
    fields: dict[str, Any] = {
        "name": "user_purchases",
        "entity": USER,
        "source": purchases(),
        "features": (
            Aggregation("purchase_count_1h", "count", window=window_1h),
            Aggregation("purchase_count_30d", "count", window="30d"),
            Aggregation("amount_sum_7d", "sum", "amount", window="7d"),
            Derived("purchase_ratio", "ratio", ("purchase_count_1h", "purchase_count_30d")),
        ),
        "description": "purchases per user",
    }
    return FeatureView(**{**fields, **overrides})
