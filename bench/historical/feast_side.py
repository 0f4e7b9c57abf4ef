"""Feast's side of bench/historical: run with the Feast virtualenv's Python.

    bench/.venv-feast/bin/python bench/historical/feast_side.py DATA_DIR

Reads ``DATA_DIR/daily.parquet`` (the events aggregated per user and UTC day) and
``DATA_DIR/entity_df.parquet``; times ``get_historical_features(...).to_df()`` with
the DuckDB offline store; prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import feast  # type: ignore[import-not-found,import-untyped,unused-ignore]  # Feast's own venv
import pandas as pd  # type: ignore[import-not-found,import-untyped,unused-ignore]  # Feast's own venv
from feast import Entity, FeatureStore, FeatureView, Field, FileSource  # type: ignore[import-not-found,import-untyped,unused-ignore]  # Feast's own venv
from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig  # type: ignore[import-not-found,import-untyped,unused-ignore]  # Feast's own venv
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig  # type: ignore[import-not-found,import-untyped,unused-ignore]  # Feast's own venv
from feast.repo_config import RepoConfig  # type: ignore[import-not-found,import-untyped,unused-ignore]  # Feast's own venv
from feast.types import Float64, Int64  # type: ignore[import-not-found,import-untyped,unused-ignore]  # Feast's own venv

FEATURES = [
    ("amount_count", Int64),
    ("amount_sum", Float64),
    ("amount_mean", Float64),
    ("amount_max", Float64),
    ("amount_min", Float64),
    ("amount_stddev", Float64),
    ("items_sum", Int64),
    ("items_mean", Float64),
]


def main() -> None:
    data = Path(sys.argv[1])
    work = Path(tempfile.mkdtemp(prefix="feast-bench-"))
    config = RepoConfig(
        project="bench",
        registry=str(work / "registry.db"),
        provider="local",
        offline_store=DuckDBOfflineStoreConfig(),
        online_store=SqliteOnlineStoreConfig(path=str(work / "online.db")),
        entity_key_serialization_version=3,
        repo_path=str(work),
    )
    store = FeatureStore(config=config)
    user = Entity(name="user", join_keys=["user_id"])
    source = FileSource(path=str(data / "daily.parquet"), timestamp_field="event_timestamp")
    view = FeatureView(
        name="user_daily",
        entities=[user],
        ttl=timedelta(days=2),
        schema=[Field(name=n, dtype=t) for n, t in FEATURES],
        source=source,
    )
    store.apply([user, view])
    entity_df = pd.read_parquet(data / "entity_df.parquet")
    began = time.perf_counter()
    result = store.get_historical_features(
        entity_df=entity_df, features=[f"user_daily:{n}" for n, _ in FEATURES]
    ).to_df()
    seconds = time.perf_counter() - began
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": len(result),
                "features": len(FEATURES),
                "version": feast.__version__,
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
