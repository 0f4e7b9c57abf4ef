"""What users declare: entities, sources, feature views and their features.

Frozen specs, checked when built, from which the runtime (ingest, worker, sinks,
offline retrieval) is made. Pure Python: importing this package does no I/O and
imports no client library; SQL text is parsed by sqlglot, imported on first use.

- :class:`Source`: a Kafka topic of Avro events (:mod:`.source`);
- :class:`Entity`, :class:`FeatureView`, :class:`Aggregation`, :class:`Derived`,
  :class:`OneHot` (:mod:`.features`);
- per-event expressions and transformations: :class:`Log`, :class:`StandardScale`,
  :class:`MinMaxScale`, :class:`Bucketize`, :class:`HourOfDay`, :class:`DayOfWeek`
  (:mod:`.transforms`) and the filter nodes (:mod:`.expr`);
- SQL into specs (:mod:`.sql`), specs into the tile runtime (:mod:`.compile`),
  specs to JSON and back (:mod:`.codec`).
"""

from streamfs.definitions.expr import DataType, Expr
from streamfs.definitions.features import (
    Aggregation,
    Derived,
    Duration,
    Entity,
    Feature,
    FeatureView,
    OneHot,
)
from streamfs.definitions.source import Source, record_fields
from streamfs.definitions.transforms import (
    Bucketize,
    DayOfWeek,
    HourOfDay,
    Log,
    MinMaxScale,
    StandardScale,
)

__all__ = [
    "Aggregation",
    "Bucketize",
    "DataType",
    "DayOfWeek",
    "Derived",
    "Duration",
    "Entity",
    "Expr",
    "Feature",
    "FeatureView",
    "HourOfDay",
    "Log",
    "MinMaxScale",
    "OneHot",
    "Source",
    "StandardScale",
    "record_fields",
]
