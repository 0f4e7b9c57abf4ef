"""Point-in-time retrieval: streamfs from raw events vs Feast on daily pre-aggregates.

Generates ``--events`` purchase events of ``--users`` users over ``--days`` days into
streamfs's offline log layout, and an entity_df of ``--rows`` (user, timestamp) rows
(timestamps in the last ``--days`` - 1 days, so long windows are full). Then, each
in its own process so peak RSS is its own:

- streamfs: :func:`streamfs.offline.retrieval.get_historical_features` with 10
  windowed features (1 h .. 30 d, count/sum/mean/max/stddev/last), exact by the
  sawtooth window rule, from the raw events;
- Feast (``--feast-python``, a separate virtualenv with ``feast[duckdb]``): its
  ``get_historical_features`` with the DuckDB offline store over the same events
  already aggregated per user and day (8 daily features: Feast's best case; it
  only does the as-of join), see ``feast_side.py``.

    .venv/bin/python bench/historical/run.py                     # full size
    .venv/bin/python bench/historical/run.py --rows 100000 --events 500000 --users 10000
    .venv/bin/python bench/historical/run.py --append bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamfs.definitions import Aggregation, Entity, FeatureView, Source
from streamfs.offline.layout import date_of, file_name, source_dir
from streamfs.offline.schema import log_schema

DAY_MS = 86_400_000
END_MS = 1_764_115_200_000  # 2025-11-26T00:00Z
SCHEMA = (Path(__file__).resolve().parents[2] / "avro_schemas" / "purchase.avsc").read_text()
CATEGORIES = np.array(["books", "games", "garden", "food", "toys", "music"])


def view() -> FeatureView:
    source = Source(
        "purchases",
        "purchase",
        "purchase-value",
        "user_id",
        "created_at",
        3_600_000,
        60_000,
        SCHEMA,
    )
    return FeatureView(
        "user_purchases",
        Entity("user", ("user_id",)),
        source,
        (
            Aggregation("count_1h", "count", window="1h"),
            Aggregation("count_1d", "count", window="1d"),
            Aggregation("count_7d", "count", window="7d"),
            Aggregation("count_30d", "count", window="30d"),
            Aggregation("amount_sum_1d", "sum", "amount", window="1d"),
            Aggregation("amount_sum_7d", "sum", "amount", window="7d"),
            Aggregation("amount_mean_7d", "mean", "amount", window="7d"),
            Aggregation("amount_max_30d", "max", "amount", window="30d"),
            Aggregation("amount_std_30d", "stddev", "amount", window="30d"),
            Aggregation("last_category_7d", "last", "category", window="7d"),
        ),
    )


def generate(out: Path, events: int, users: int, days: int, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    start = END_MS - days * DAY_MS
    user_ids = np.char.add("u", np.char.zfill(rng.integers(0, users, events).astype(str), 6))
    times = np.sort(rng.integers(start, END_MS, events))
    amount = np.round(rng.gamma(2.0, 20.0, events), 2)
    category = CATEGORIES[rng.integers(0, len(CATEGORIES), events)]
    items = rng.integers(1, 5, events).astype(np.int32)
    table = pa.table(
        {
            "user_id": user_ids,
            "order_id": np.char.add("o", np.arange(events).astype(str)),
            "amount": amount,
            "currency": np.full(events, "EUR"),
            "category": category,
            "created_at": times,
            "coupon": pa.nulls(events, pa.string()),
            "items": items,
            "payment_method": np.full(events, "card"),
            "_entity_key": user_ids,
            "_event_time_ms": times,
            "_partition": np.zeros(events, np.int32),
            "_offset": np.arange(events),
        }
    ).cast(log_schema(view().source))
    shutil.rmtree(out / "log", ignore_errors=True)  # files of an earlier, other-sized run
    log_dir = source_dir(str(out / "log"), "purchases")
    day_index = (times - start) // DAY_MS
    for day in range(days):
        lo, hi = np.searchsorted(day_index, [day, day + 1])
        if hi > lo:
            directory = Path(log_dir) / f"date={date_of(int(times[lo]))}"
            directory.mkdir(parents=True, exist_ok=True)
            pq.write_table(table.slice(lo, hi - lo), directory / file_name(0, int(lo), int(hi - 1)))
    # Feast's input: the same events aggregated per user and UTC day, stamped at day end.
    daily = (
        pa.table({"user_id": user_ids, "day": (times // DAY_MS), "amount": amount, "items": items})
        .group_by(["user_id", "day"])
        .aggregate(
            [
                ("amount", "count"),
                ("amount", "sum"),
                ("amount", "mean"),
                ("amount", "max"),
                ("amount", "min"),
                ("amount", "stddev"),
                ("items", "sum"),
                ("items", "mean"),
            ]
        )
    )
    stamp = pa.array((daily.column("day").to_numpy() + 1) * DAY_MS - 1).cast(
        pa.timestamp("ms", "UTC")
    )
    daily = daily.drop_columns(["day"]).append_column("event_timestamp", stamp)
    daily = daily.rename_columns(
        [c.replace(".", "_") if c != "user_id" else c for c in daily.column_names]
    )
    pq.write_table(daily, out / "daily.parquet")
    q_users = np.char.add("u", np.char.zfill(rng.integers(0, users, rows).astype(str), 6))
    q_times = rng.integers(start + DAY_MS, END_MS, rows)
    entity = pa.table(
        {"user_id": q_users, "event_timestamp": pa.array(q_times).cast(pa.timestamp("ms", "UTC"))}
    )
    pq.write_table(entity, out / "entity_df.parquet")


def run_streamfs(data: Path, threads: int | None, memory_limit: str | None) -> dict[str, Any]:
    from streamfs.offline.retrieval import get_historical_features

    v = view()
    entity = pq.read_table(data / "entity_df.parquet")
    names = [f.name for f in v.aggregations]
    began = time.perf_counter()
    result = get_historical_features(
        entity, names, [v], str(data / "log"), threads=threads, memory_limit=memory_limit or None
    )
    seconds = time.perf_counter() - began
    checksum = float(pa.compute.sum(result.column("count_30d")).as_py())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "rows": result.num_rows,
        "features": len(names),
        "check": checksum,
        "peak_mb": peak_mb,
    }


def child(argv: list[str]) -> tuple[dict[str, Any], float]:
    """Run ``argv``, parse its last stdout line as JSON; returns it and the peak RSS (MB)
    the child measured of itself (``ru_maxrss``: the whole process, data and libraries)."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{argv[0]} failed ({done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result, float(result["peak_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path("bench/out/historical"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--memory-limit",
        default="1500MB",
        help="DuckDB's memory_limit for streamfs ('' = its default)",
    )
    parser.add_argument("--feast-python", default="bench/.venv-feast/bin/python")
    parser.add_argument("--skip-feast", action="store_true")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the data already in --data (same sizes!)"
    )
    parser.add_argument("--append", type=Path, default=None, help="append the results to this file")
    parser.add_argument("--only", choices=["streamfs"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only == "streamfs":
        print(json.dumps(run_streamfs(args.data, args.threads, args.memory_limit)))
        return
    if not (args.reuse and (args.data / "entity_df.parquet").exists()):
        began = time.perf_counter()
        generate(args.data, args.events, args.users, args.days, args.rows, args.seed)
        print(f"generated in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    me = [sys.executable, __file__, "--only", "streamfs", "--data", str(args.data)]
    if args.threads:
        me += ["--threads", str(args.threads)]
    me += ["--memory-limit", args.memory_limit]
    ours, ours_mb = child(me)
    lines = [
        "## Point-in-time retrieval — `bench/historical/run.py`\n",
        f"{time.strftime('%Y-%m-%d')}. entity_df {args.rows:,} rows vs {args.events:,} purchase"
        f" events of {args.users:,} users over {args.days} days; streamfs with DuckDB"
        f" memory_limit {args.memory_limit or 'default'}; Python"
        f" {platform.python_version()}, {platform.machine()}.\n",
        "| engine | input | features | seconds | peak RSS MB |",
        "|---|---|---|---|---|",
        f"| streamfs `get_historical_features` (DuckDB) | raw events, exact sawtooth windows"
        f" | {ours['features']} | {ours['seconds']:.2f} | {ours_mb:,.0f} |",
    ]
    if not args.skip_feast:
        feast_script = Path(__file__).with_name("feast_side.py")
        theirs, theirs_mb = child([args.feast_python, str(feast_script), str(args.data.resolve())])
        mb = f"{theirs_mb:,.0f}"
        lines.append(
            f"| Feast {theirs['version']} `get_historical_features` (DuckDB offline store)"
            f" | per user-day aggregates | {theirs['features']} | {theirs['seconds']:.2f} | {mb} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append is not None:
        with args.append.open("a", encoding="utf-8") as out:
            out.write("\n" + text)


if __name__ == "__main__":
    main()
