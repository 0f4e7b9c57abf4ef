"""Tile aggregation throughput: the worker's pure per-event path and the read path.

Builds ``--events`` synthetic events over ``--entities`` entities spread across
``--span-h`` hours (times mostly increasing, 10% up to 10 minutes out of order),
then folds them into one :class:`~streamfs.tiles.EntityTiles` per entity, in
batches of ``--batch`` as a worker takes them from Kafka, and queries every
entity's features at the end.

Two feature sets, 8 aggregations each over windows 1 h / 24 h / 7 d (default hops
5 min / 1 h / 1 day: 13 / 25 / 8 tiles per query):

- ``basic``: count, sum, mean at 1 h and 24 h, count and sum at 7 d;
- ``mixed``: count 1 h, sum 1 h, mean 24 h, max 24 h, stddev 24 h, last 7 d,
  count_distinct 7 d, p95 24 h (the sketches cost most).

Decoding, RocksDB and Redis are not part of it (bench/codec measures decoding).

    .venv/bin/python bench/aggregate/run.py
    .venv/bin/python bench/aggregate/run.py --events 200000 --sets basic
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import time
from typing import Any

from streamfs import native
from streamfs.aggregators import make
from streamfs.tiles import EntityTiles, Feature, Layout
from streamfs.windows import DAY_MS, HOUR_MS, MINUTE_MS, WindowSpec

START_MS = 1_700_000_000_000

FEATURE_SETS: dict[str, list[tuple[str, str, int]]] = {
    "basic": [
        ("count", "count", HOUR_MS),
        ("sum", "amount", HOUR_MS),
        ("mean", "amount", HOUR_MS),
        ("count", "count", DAY_MS),
        ("sum", "amount", DAY_MS),
        ("mean", "amount", DAY_MS),
        ("count", "count", 7 * DAY_MS),
        ("sum", "amount", 7 * DAY_MS),
    ],
    "mixed": [
        ("count", "count", HOUR_MS),
        ("sum", "amount", HOUR_MS),
        ("mean", "amount", DAY_MS),
        ("max", "amount", DAY_MS),
        ("stddev", "amount", DAY_MS),
        ("last", "amount", 7 * DAY_MS),
        ("count_distinct", "item", 7 * DAY_MS),
        ("p95", "amount", DAY_MS),
    ],
}


def layout_for(spec: list[tuple[str, str, int]]) -> tuple[Layout, list[str]]:
    features = [
        Feature(
            f"{function}_{field}_{window_ms // MINUTE_MS}m",
            make(function),
            WindowSpec.of(window_ms),
        )
        for function, field, window_ms in spec
    ]
    return Layout.of(features), [field for _, field, _ in spec]


def make_events(
    count: int, entities: int, span_ms: int, seed: int
) -> list[tuple[int, int, dict[str, Any]]]:
    rng = random.Random(seed)  # noqa: S311  # synthetic benchmark data, not secrets
    events = []
    for i in range(count):
        time_ms = START_MS + i * span_ms // count
        if rng.random() < 0.1:
            time_ms -= rng.randrange(10 * MINUTE_MS)
        fields = {"count": 1, "amount": round(rng.uniform(1, 500), 2), "item": rng.randrange(5_000)}
        events.append((rng.randrange(entities), time_ms, fields))
    return events


def run_set(name: str, events: list[tuple[int, int, dict[str, Any]]], batch: int) -> None:
    layout, fields = layout_for(FEATURE_SETS[name])
    # The worker evaluates input expressions once per event, before the tiles see it.
    prepared = [(entity, time_ms, [event[f] for f in fields]) for entity, time_ms, event in events]
    stores: dict[int, EntityTiles] = {}
    gc.collect()
    started = time.perf_counter()
    for offset in range(0, len(prepared), batch):
        for seq, (entity, time_ms, values) in enumerate(prepared[offset : offset + batch], offset):
            store = stores.get(entity)
            if store is None:
                store = stores[entity] = EntityTiles(layout)
            store.add_event(time_ms, values, seq)
    add_s = time.perf_counter() - started
    now_ms = max(time_ms for _, time_ms, _ in prepared)

    started = time.perf_counter()
    for store in stores.values():
        store.evict(now_ms)
    evict_s = time.perf_counter() - started

    started = time.perf_counter()
    for store in stores.values():
        store.query(now_ms)
    query_s = time.perf_counter() - started

    sample = list(stores.values())[: min(len(stores), 20_000)]
    started = time.perf_counter()
    encoded = [store.encode() for store in sample]
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    for data in encoded:
        EntityTiles.decode(layout, data)
    decode_s = time.perf_counter() - started
    mean_bytes = sum(map(len, encoded)) / len(encoded)

    n, e = len(prepared), len(stores)
    print(f"[{name}] {', '.join(f.name for f in layout.features)}")
    print(
        f"  add     {n / add_s:>12,.0f} events/s   ({add_s * 1e6 / n:.2f} µs/event, 8 aggregations)"
    )
    print(f"  evict   {e / evict_s:>12,.0f} entities/s")
    print(f"  query   {e / query_s:>12,.0f} entities/s  ({e * 8 / query_s:,.0f} feature values/s)")
    print(
        f"  encode  {len(sample) / encode_s:>12,.0f} entities/s  (mean {mean_bytes:,.0f} B/entity)"
    )
    print(f"  decode  {len(sample) / decode_s:>12,.0f} entities/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--span-h", type=int, default=48, help="hours the event times cover")
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sets", nargs="+", default=list(FEATURE_SETS), choices=list(FEATURE_SETS))
    args = parser.parse_args()
    print(
        f"python {platform.python_version()} on {platform.machine()}; {args.events:,} events, "
        f"{args.entities:,} entities, {args.span_h} h, batches of {args.batch:,}; "
        f"streamfs modules {native.status()}"
    )
    events = make_events(args.events, args.entities, args.span_h * HOUR_MS, args.seed)
    for name in args.sets:
        run_set(name, events, args.batch)


if __name__ == "__main__":
    main()
