"""The event streams: topics named as `streamfs produce --kind ...` writes them by default."""

from pathlib import Path

from streamfs.definitions import Source

SCHEMAS = Path(__file__).resolve().parent.parent / "avro_schemas"
HOUR_MS = 3_600_000
MINUTE_MS = 60_000

purchases = Source(
    name="purchases",
    topic="purchase",
    schema_subject="purchase-value",
    key_field="user_id",
    event_time_field="created_at",
    allowed_lateness_ms=HOUR_MS,
    max_future_skew_ms=MINUTE_MS,
    reader_schema=(SCHEMAS / "purchase.avsc").read_text(),
)

page_views = Source(
    name="page_views",
    topic="page_view",
    schema_subject="page_view-value",
    key_field="user_id",
    event_time_field="viewed_at",
    allowed_lateness_ms=HOUR_MS,
    max_future_skew_ms=MINUTE_MS,
    reader_schema=(SCHEMAS / "page_view.avsc").read_text(),
)

signups = Source(
    name="signups",
    topic="user_signup",
    schema_subject="user_signup-value",
    key_field="user_id",
    event_time_field="signed_up_at",
    allowed_lateness_ms=24 * HOUR_MS,
    max_future_skew_ms=MINUTE_MS,
    reader_schema=(SCHEMAS / "user_signup.avsc").read_text(),
)
