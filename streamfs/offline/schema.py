"""The explicit Arrow schema of a source's offline log: its Avro reader schema plus
the bookkeeping columns, never inferred from the data.

==================  ==========================================================
``_entity_key``     the source's key field (string or int64)
``_event_time_ms``  event time, epoch ms (int64)
``_partition``      Kafka partition the event came from (int32; -1: backfill)
``_offset``         its offset there: orders ties for first/last (int64)
==================  ==========================================================

Avro ``int``/``long`` (and the millisecond timestamps) become int32/int64,
``float``/``double`` float32/float64 (float32 holds an Avro float exactly),
``boolean`` bool, ``string``/``enum`` string, ``bytes``/``fixed`` binary. Other
types (records, arrays, maps) are left out: no feature expression reads them.
Every column is nullable, so files written before a field was added still read.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from streamfs.definitions import Source, record_fields

META_COLUMNS = ("_entity_key", "_event_time_ms", "_partition", "_offset")

_PRIMITIVES: dict[str, pa.DataType] = {
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "bytes": pa.binary(),
    "enum": pa.string(),
    "fixed": pa.binary(),
}


def _arrow_type(avro_type: Any) -> pa.DataType | None:
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        return _arrow_type(branches[0]) if len(branches) == 1 else None
    if isinstance(avro_type, dict):
        avro_type = avro_type.get("type")
    return _PRIMITIVES.get(avro_type) if isinstance(avro_type, str) else None


def log_schema(source: Source) -> pa.Schema:
    """The schema every log file of ``source`` is written with (see the module doc)."""
    fields = []
    for name, avro_type in record_fields(source.name, source.reader_schema).items():
        arrow_type = _arrow_type(avro_type)
        if arrow_type is not None:
            fields.append(pa.field(name, arrow_type))
    key_type = fields[[f.name for f in fields].index(source.key_field)].type
    key = pa.string() if pa.types.is_string(key_type) else pa.int64()
    return pa.schema(
        [
            *fields,
            pa.field("_entity_key", key),
            pa.field("_event_time_ms", pa.int64()),
            pa.field("_partition", pa.int32()),
            pa.field("_offset", pa.int64()),
        ]
    )
