"""Feast's side of bench/online: run with the Feast virtualenv's Python.

    bench/.venv-feast/bin/python bench/online/feast_side.py REPO_DIR REDIS_HOST:PORT VALUES.json

Writes a feature repo (one entity ``user``, one view of the same 10 features, a
Redis online store), applies it, writes the values streamfs serves (VALUES.json:
entity -> feature -> value) into Feast's Redis layout with ``write_to_online_store``,
reads one back, and prints it as one JSON line. ``feast serve`` is then run on REPO_DIR.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped]  # Feast's venv only, no stubs
from feast import (  # type: ignore[import-not-found]  # lives in Feast's own venv
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
)
from feast.types import Float64, Int64  # type: ignore[import-not-found]  # Feast's venv

VIEW = "user_purchases"


def main() -> None:
    repo, redis_address, values_file = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    values: dict[str, dict[str, float | int | None]] = json.loads(values_file.read_text())
    names = list(next(iter(values.values())))
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: streamfs_bench\n"
        "provider: local\n"
        f"registry: {repo / 'registry.db'}\n"
        "online_store:\n"
        "  type: redis\n"
        f"  connection_string: '{redis_address}'\n"
        "entity_key_serialization_version: 3\n"
    )
    now = datetime.now(UTC)
    rows = pd.DataFrame([{"user_id": u, **v, "event_timestamp": now} for u, v in values.items()])
    rows.to_parquet(repo / "rows.parquet")
    source = FileSource(path=str(repo / "rows.parquet"), timestamp_field="event_timestamp")
    user = Entity(name="user", join_keys=["user_id"])
    schema = [Field(name=n, dtype=Int64 if "count" in n else Float64) for n in names]
    view = FeatureView(
        name=VIEW, entities=[user], ttl=timedelta(days=30), schema=schema, source=source
    )
    store = FeatureStore(repo_path=str(repo))
    store.apply([user, view])
    store.write_to_online_store(VIEW, rows.drop(columns=[]))
    first = next(iter(values))
    back = store.get_online_features(
        features=[f"{VIEW}:{n}" for n in names], entity_rows=[{"user_id": first}]
    ).to_dict()
    print(json.dumps({"entity": first, "values": {n: back[n][0] for n in names}}))


if __name__ == "__main__":
    main()
