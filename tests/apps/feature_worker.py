"""The streamfs worker on the hand-built purchase view of ``tests.worker_fixtures``.

Run as a separate process by the worker tests::

    FW_APP_ID=... FW_TOPIC=... FW_PARTITIONS=4 FW_DATADIR=... STREAMFS_KAFKA_BOOTSTRAP=...
    STREAMFS_REDIS_URL=... STREAMFS_SCHEMA_REGISTRY_URL=... \\
        python -m faust -A tests.apps.feature_worker worker -l info
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from streamfs.engine import PartitionEngine, ViewPlan
from streamfs.ingest import Validator
from streamfs.schemas.client import connect
from streamfs.schemas.codec import Decoder
from streamfs.worker import WorkerOptions, build_app, wall_clock_ms
from tests.worker_fixtures import PURCHASE_SCHEMA, purchase_plan, purchase_source

source = purchase_source(
    os.environ["FW_TOPIC"], lateness_ms=int(os.environ.get("FW_LATENESS_MS", "3600000"))
)
options = WorkerOptions(
    app_id=os.environ["FW_APP_ID"],
    kafka_bootstrap=os.environ["STREAMFS_KAFKA_BOOTSTRAP"],
    redis_url=os.environ["STREAMFS_REDIS_URL"],
    data_dir=Path(os.environ["FW_DATADIR"]),
    batch_size=int(os.environ.get("FW_BATCH", "500")),
)


def make_engine(plans: Sequence[ViewPlan]) -> PartitionEngine:
    decoder = Decoder(connect(os.environ["STREAMFS_SCHEMA_REGISTRY_URL"]), PURCHASE_SCHEMA)
    return PartitionEngine(
        source,
        plans,
        Validator(source, decoder, wall_clock_ms),
        wall_clock_ms,
        namespace=os.environ["FW_APP_ID"],
    )


app, runtimes = build_app(
    options,
    [purchase_plan(source)],
    make_engine,
    partitions_of=lambda _topic: int(os.environ["FW_PARTITIONS"]),
)
