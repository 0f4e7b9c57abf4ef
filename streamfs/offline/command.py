"""The offline commands: ``historical``, ``backfill``, ``check-consistency``, ``offline compact``.

``streamfs historical``: a point-in-time training set from a file of entities and times.

    streamfs historical --entities rows.parquet --features user_purchases:count_1h,gap \\
        --out training.parquet

The entities file (Parquet, CSV or JSON Lines) holds each view's join key column and
a timestamp column (``--timestamp-column``, timestamps or epoch ms); the output has
its rows, in order, plus one column per feature, valued at each row's timestamp by
the window rule (DESIGN §3) from the offline log under ``--offline-root``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streamfs.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``historical``, ``backfill`` and ``check-consistency``."""
    add_historical_parser(subparsers)
    add_backfill_parser(subparsers)
    add_check_parser(subparsers)
    add_offline_parser(subparsers)


def add_offline_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Add ``offline compact``; its handler is :func:`run_compact`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "offline", help="maintain the offline log"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    compact = actions.add_parser(
        "compact", help="merge each old date partition's files into one per Kafka partition"
    )
    compact.add_argument("--source", action="append", default=None, help="default: every source")
    compact.add_argument(
        "--before", default=None, help="compact dates before this YYYY-MM-DD (default: yesterday)"
    )
    compact.add_argument(
        "--target-mb",
        type=int,
        default=None,
        help="merge adjacent files up to this size (default: STREAMFS_OFFLINE_COMPACT_MB, 256)",
    )
    compact.add_argument(
        "--no-snapshots", action="store_true", help="leave the feature snapshot files alone"
    )
    add_root_argument(compact)
    compact.set_defaults(handler=run_compact)
    return parser


def run_compact(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime, timedelta

    from streamfs.definitions.codec import source_from_json
    from streamfs.offline.compact import compact, compact_snapshots
    from streamfs.store import FeatureStore

    before: str = args.before or (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    target_mb: int = args.target_mb or settings.offline_compact_mb
    target = target_mb << 20
    root = offline_root(args, settings)
    state = FeatureStore(settings).registry_state()
    names = args.source or state.names("source")
    for name in names:
        record = state.current("source", name)
        if record is None:
            print(f"source {name!r} is not registered")
            return 2
        done = compact(root, source_from_json(record.spec), before, target)
        print(f"{name}: wrote {done.merged} merged files, removed {done.removed}")
    if not args.no_snapshots and not args.source:
        done = compact_snapshots(root, before, target)
        print(f"snapshots: wrote {done.merged} merged files, removed {done.removed}")
    return 0


def add_historical_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Add the ``historical`` subcommand; its handler is :func:`run_historical`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "historical",
        help="point-in-time feature values for a file of entities and timestamps",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--entities", type=Path, required=True, help=".parquet/.csv/.jsonl file")
    parser.add_argument(
        "--features", required=True, help="comma-separated, view:feature or unique bare names"
    )
    parser.add_argument("--out", type=Path, required=True, help=".parquet/.csv/.jsonl file")
    parser.add_argument("--timestamp-column", default="event_timestamp")
    add_root_argument(parser)
    parser.set_defaults(handler=run_historical)
    return parser


def add_root_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--offline-root",
        default=None,
        help="the offline log: a directory or a pyarrow filesystem URI (default: cache dir)",
    )


def offline_root(args: argparse.Namespace, settings: Settings) -> str:
    from streamfs.store import default_offline_root

    root: str | None = args.offline_root
    return root if root is not None else default_offline_root(settings)


def run_historical(args: argparse.Namespace, settings: Settings) -> int:
    from streamfs.offline.files import read_table, write_table
    from streamfs.store import FeatureStore

    features = [f.strip() for f in args.features.split(",") if f.strip()]
    table = read_table(args.entities)
    result = FeatureStore(settings).get_historical_features(
        table,
        features,
        timestamp_column=args.timestamp_column,
        offline_root=offline_root(args, settings),
    )
    write_table(result, args.out)
    print(f"wrote {result.num_rows} rows x {len(features)} features to {args.out}")
    return 0


def add_backfill_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Add the ``backfill`` subcommand; its handler is :func:`run_backfill`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "backfill",
        help="append rows of Parquet/CSV/JSON Lines files to the offline log (and Redis)",
        description="Check every row against the source's schema, append the good ones to the"
        " offline log, write the bad ones (file, row, reason) to a rejects file.",
    )
    parser.add_argument("--source", required=True, help="a registered source's name")
    parser.add_argument(
        "--from",
        dest="files",
        nargs="+",
        required=True,
        help="files, directories or pyarrow filesystem URIs (s3://bucket/dir/, file:///...)"
        " of .parquet/.csv/.jsonl",
    )
    parser.add_argument(
        "--rejects",
        type=Path,
        default=Path("backfill-rejects.jsonl"),
        help="where bad rows go, one JSON line each (default: ./backfill-rejects.jsonl)",
    )
    parser.add_argument(
        "--to-online",
        action="store_true",
        help="also write each served view's window state to Redis (seeds entities only)",
    )
    add_root_argument(parser)
    parser.set_defaults(handler=run_backfill)
    return parser


def run_backfill(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import time

    from streamfs.definitions.codec import source_from_json
    from streamfs.errors import ConfigError
    from streamfs.offline.backfill import (
        backfill,
        current_state,
        horizon_ms,
        online_writes,
        write_rejects,
    )
    from streamfs.offline.log import OfflineSink
    from streamfs.plans import served_views
    from streamfs.store import FeatureStore

    state = FeatureStore(settings).registry_state()
    record = state.current("source", args.source)
    if record is None:
        raise ConfigError(f"source {args.source!r} is not registered")
    source = source_from_json(record.spec)
    root = offline_root(args, settings)
    done = backfill(source, args.files, OfflineSink(root))
    write_rejects(done.problems, args.rejects)
    for problem in done.problems[:20]:
        print(problem)
    print(
        f"appended {len(done.events)} events to the offline log in {len(done.files_written)}"
        f" files; {len(done.problems)} bad rows in {args.rejects}"
    )
    if args.to_online and done.events:
        now = time.time_ns() // 1_000_000
        served = [s for s in served_views(state) if s.view.source.name == source.name]
        # The current state comes from the whole log, not this run's rows alone: events
        # streamed or backfilled earlier count in the same windows.
        since = now - max((horizon_ms(s.view) for s in served), default=0) - 120_000
        events = current_state(root, source, {e.entity_key for e in done.events}, since)
        writes = [
            w
            for s in served
            for w in online_writes(s.view, s.state_version, events, now, settings.namespace)
        ]
        changed = asyncio.run(_write_online(settings, writes))
        print(f"wrote {changed} of {len(writes)} entity states to Redis")
    return 0


async def _write_online(settings: Settings, writes: list[Any]) -> int:
    import time

    import redis.asyncio as redis_asyncio

    from streamfs.errors import ConfigError
    from streamfs.online import OnlineWriter

    if not settings.redis_url:
        raise ConfigError("--to-online needs Redis: set STREAMFS_REDIS_URL")
    client = redis_asyncio.Redis.from_url(settings.redis_url)
    try:
        writer = OnlineWriter(client, lambda: time.time_ns() // 1_000_000)
        return await writer.write(writes)
    finally:
        await client.aclose()


def add_check_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Add the ``check-consistency`` subcommand; its handler is :func:`run_check`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check-consistency",
        help="compare online values now with offline values at the same instant",
        description="For N entities sampled from the offline log, read every feature of the"
        " view online (now) and offline at the same instant; print the mismatches and exit 1"
        " if there is any. Run it when the worker has caught up.",
    )
    parser.add_argument("--view", required=True)
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    add_root_argument(parser)
    parser.set_defaults(handler=run_check)
    return parser


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    from streamfs.offline.consistency import check

    mismatches, checked = check(
        settings, args.view, args.sample, offline_root(args, settings), args.seed
    )
    for mismatch in mismatches:
        print(mismatch)
    print(f"checked {checked} entities of view {args.view!r}: {len(mismatches)} mismatches")
    return 1 if mismatches else 0
