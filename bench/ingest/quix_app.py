"""The peer: quixstreams computing the ingest benchmark's aggregations (run by ``run.py``).

Runs in its own virtualenv (quixstreams is not a streamfs dependency)::

    /tmp/venv-quix/bin/python bench/ingest/quix_app.py BOOTSTRAP TOPIC GROUP STATE_DIR SCHEMA

Only the standard library, fastavro and quixstreams are imported here. Per hop of the
sample view (5 min, 1 h, 1 day) one tumbling window keyed by user computes the same
partial aggregates streamfs keeps per tile (count, sum, mean, a Welford state for
stddev; on the day windows also the distinct categories and the last category), and
emits each update (``.current()``), as the worker writes every touched entity. The
run ends when ``run.py`` sees the group's committed offsets at the end and kills it.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

from fastavro import parse_schema, schemaless_reader

# quixstreams lives in its own virtualenv, not the one mypy checks with.
from quixstreams import Application  # type: ignore[import-not-found]
from quixstreams.dataframe.windows import (  # type: ignore[import-not-found]
    Count,
    Latest,
    Mean,
    Reduce,
    Sum,
)
from quixstreams.models.serializers import Deserializer  # type: ignore[import-not-found]

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


class ConfluentAvro(Deserializer):  # type: ignore[misc]  # an untyped base class
    """Confluent wire format (5-byte header) Avro, decoded with fastavro."""

    def __init__(self, schema: dict[str, Any]) -> None:
        super().__init__()
        self._schema = parse_schema(_plain_times(schema))

    def __call__(self, value: bytes, ctx: Any) -> Any:
        return schemaless_reader(io.BytesIO(value[5:]), self._schema, None)


def _plain_times(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without logical types: timestamps as int ms, as streamfs decodes them."""
    fields = []
    for field in schema["fields"]:
        kind = field["type"]
        if isinstance(kind, dict) and "logicalType" in kind:
            field = {**field, "type": kind["type"]}
        fields.append(field)
    return {**schema, "fields": fields}


def _welford_add(state: list[float], value: dict[str, Any]) -> list[float]:
    n, mean, m2 = state
    x = value["amount"]
    n += 1
    delta = x - mean
    mean += delta / n
    return [n, mean, m2 + delta * (x - mean)]


def _distinct_add(state: list[str], value: dict[str, Any]) -> list[str]:
    category = value["category"]
    if category not in state:
        state.append(category)
    return state


def main() -> None:
    bootstrap, topic_name, group, state_dir, schema_path = sys.argv[1:6]
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        commit_interval=1.0,
        loglevel="WARNING",
    )
    topic = app.topic(
        topic_name,
        key_deserializer="bytes",
        value_deserializer=ConfluentAvro(schema),
        timestamp_extractor=lambda value, _headers, _ts, _type: value["created_at"],
    )
    sdf = app.dataframe(topic)
    basic = {
        "count": Count(),
        "sum": Sum("amount"),
        "mean": Mean("amount"),
        "welford": Reduce(
            reducer=_welford_add, initializer=lambda v: _welford_add([0, 0.0, 0.0], v)
        ),
    }
    sdf.tumbling_window(5 * MINUTE_MS).agg(**basic).current()
    sdf.tumbling_window(HOUR_MS).agg(**basic).current()
    sdf.tumbling_window(DAY_MS).agg(
        **basic,
        categories=Reduce(reducer=_distinct_add, initializer=lambda v: _distinct_add([], v)),
        last_category=Latest("category"),
    ).current()
    app.run()


if __name__ == "__main__":
    main()
