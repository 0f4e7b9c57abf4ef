"""Streaming events into Kafka: seeded sample events or a checked file, Avro through the registry.

Both paths end in :func:`send`: each record is encoded in the Confluent wire format
with the id registered for ``<topic>-value`` (TopicNameStrategy) and keyed by its
entity id, at a steady ``rate`` (events/s; 0 = as fast as the broker takes them).

Files (:func:`check_file`) are read whole and checked against the schema before
anything is sent, so a bad file is reported at once, every bad row with its file,
row and reason, instead of half-sent. Rows are numbered as an editor shows them:
the line for JSON Lines and CSV (the CSV header is line 1), the 1-based row for
Parquet. JSON Lines are read line by line with the standard library, because
pyarrow's reader stops at the first malformed line without saying which rows are
fine; CSV (every cell read as text, then converted by the schema) and Parquet are
read with pyarrow.
"""

from __future__ import annotations

import asyncio
import csv as csv_text
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from fastavro import parse_schema
from fastavro.validation import ValidationError, validate

from streamfs.errors import ConfigError
from streamfs.schemas.codec import Encoder
from streamfs.schemas.sample import Kind, ShopEvents

FILE_FORMATS: Final = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_MILLIS: Final = frozenset({"timestamp-millis", "local-timestamp-millis"})


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why one row of a file cannot be sent; ``reason`` is a short stable word."""

    path: str
    row: int
    reason: str  # bad_json, bad_row, missing_field, bad_value
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.row}: {self.reason}: {self.detail}"


@dataclass(frozen=True, slots=True)
class CheckedFile:
    records: list[dict[str, Any]]
    problems: list[RowProblem]
    ignored_columns: list[str]  # columns the schema has no field for


def sample_records(
    kind: Kind, *, seed: int, entities: int, count: int, clock: Callable[[], int]
) -> Iterator[dict[str, Any]]:
    """``count`` sample events (0: without end); same seed and clock readings, same events."""
    shop = ShopEvents(seed=seed, entities=entities, clock=clock)
    if count:
        yield from shop.events(kind, count)
    else:
        while True:
            yield from shop.events(kind, 1_000)


# --- files ----------------------------------------------------------------------------------


def check_file(path: Path, schema: str) -> CheckedFile:
    """Read ``path`` (format by suffix) and check every row against ``schema``."""
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(FILE_FORMATS)}"
        )
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    schema_json = json.loads(schema)
    fields = {f["name"]: f for f in schema_json["fields"]}
    parsed = parse_schema(schema_json)
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}[fmt](path, fields)
    records: list[dict[str, Any]] = []
    problems: list[RowProblem] = []
    columns: set[str] = set()
    for row, values in rows:
        if isinstance(values, RowProblem):
            problems.append(values)
            continue
        columns.update(values)
        checked = coerce_row(values, fields, from_text=fmt == "csv")
        if isinstance(checked, tuple):
            problems.append(RowProblem(str(path), row, *checked))
            continue
        try:
            validate(checked, parsed, raise_errors=True)
        except ValidationError as exc:
            problems.append(RowProblem(str(path), row, "bad_value", "; ".join(exc.errors)))
            continue
        records.append(checked)
    return CheckedFile(records, problems, sorted(columns - set(fields)))


Rows = Iterator[tuple[int, dict[str, Any] | RowProblem]]


def _jsonl_rows(path: Path, fields: Mapping[str, Any]) -> Rows:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                yield number, RowProblem(str(path), number, "bad_json", str(exc))
                continue
            if not isinstance(value, dict):
                yield number, RowProblem(str(path), number, "bad_json", "not a JSON object")
                continue
            yield number, value


def _csv_rows(path: Path, fields: Mapping[str, Any]) -> Rows:
    import pyarrow as pa
    from pyarrow import csv

    invalid: dict[int, str] = {}

    def skip(row: Any) -> str:
        invalid[row.number] = f"expected {row.expected_columns} columns, got {row.actual_columns}"
        return "skip"

    with path.open(encoding="utf-8") as text:
        header = next(csv_text.reader(text), [])
    table = csv.read_csv(
        path,
        read_options=csv.ReadOptions(use_threads=False),  # so bad rows know their line
        parse_options=csv.ParseOptions(invalid_row_handler=skip),
        convert_options=csv.ConvertOptions(
            column_types={name: pa.string() for name in header}, strings_can_be_null=True
        ),
    )
    line = 1  # the header
    for values in table.to_pylist():
        line += 1
        while line in invalid:
            yield line, RowProblem(str(path), line, "bad_row", invalid.pop(line))
            line += 1
        yield line, {k: v for k, v in values.items() if v is not None}
    for number, detail in sorted(invalid.items()):  # bad rows after the last good one
        yield number, RowProblem(str(path), number, "bad_row", detail)


def _parquet_rows(path: Path, fields: Mapping[str, Any]) -> Rows:
    from pyarrow import parquet

    yield from enumerate(parquet.read_table(path).to_pylist(), start=1)


def coerce_row(
    row: Mapping[str, Any], fields: Mapping[str, Any], *, from_text: bool
) -> dict[str, Any] | tuple[str, str]:
    """``row`` as a record of the schema's top-level fields, or ``(reason, detail)``."""
    record, problems = coerce_fields(row, fields, from_text=from_text)
    if problems:
        return problems[0].reason, problems[0].detail
    return record


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """Why one field of a record does not fit its schema; ``reason`` as in :class:`RowProblem`."""

    field: str
    reason: str  # missing_field, bad_value
    detail: str


def coerce_fields(
    row: Mapping[str, Any], fields: Mapping[str, Any], *, from_text: bool
) -> tuple[dict[str, Any], list[FieldProblem]]:
    """``row`` as a record of the schema's top-level fields, and every field that misfits."""
    record: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for name, field in fields.items():
        value = row.get(name)
        if value is None:
            if _nullable(field["type"]):
                record[name] = None
            elif name not in row and "default" in field:
                record[name] = field["default"]
            else:
                problems.append(
                    FieldProblem(
                        name, "missing_field", f"{name} is {'null' if name in row else 'missing'}"
                    )
                )
            continue
        try:
            record[name] = _coerce(value, field["type"], from_text)
        except (TypeError, ValueError) as exc:
            problems.append(FieldProblem(name, "bad_value", f"{name}: {exc}"))
    return record, problems


def _nullable(avro_type: Any) -> bool:
    return avro_type == "null" or (isinstance(avro_type, list) and "null" in avro_type)


def _coerce(value: Any, avro_type: Any, from_text: bool) -> Any:
    if isinstance(avro_type, list):
        errors = []
        for branch in (t for t in avro_type if t != "null"):
            try:
                return _coerce(value, branch, from_text)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError(" / ".join(errors))
    logical = avro_type.get("logicalType") if isinstance(avro_type, dict) else None
    base = avro_type.get("type") if isinstance(avro_type, dict) else avro_type
    if logical in _MILLIS:
        return _epoch_ms(value)
    if base in ("int", "long"):
        if from_text and isinstance(value, str):
            return int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{value!r} is not a whole number")
        return value
    if base in ("float", "double"):
        if from_text and isinstance(value, str):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{value!r} is not a number")
        return float(value)
    if base == "boolean":
        if from_text and isinstance(value, str):
            text = value.strip().lower()
            if text not in {"true", "false", "1", "0"}:
                raise ValueError(f"{value!r} is not true or false")
            return text in {"true", "1"}
        if not isinstance(value, bool):
            raise TypeError(f"{value!r} is not true or false")
        return value
    if base == "string" and not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    if base == "bytes" and isinstance(value, str):
        return value.encode()
    return value  # records, enums, arrays...: fastavro's validate judges them


def _epoch_ms(value: Any) -> int:
    """Epoch ms from an int, a datetime (naive = UTC), or text of either (JSON has no times)."""
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is neither epoch ms nor an ISO-8601 time") from None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not epoch ms")
    return value


# --- sending --------------------------------------------------------------------------------


class Pacer:
    """Spreads events evenly at ``rate`` per second (0: no pause), from the first event on."""

    def __init__(self, rate: float, monotonic_s: Callable[[], float] = time.monotonic) -> None:
        if rate < 0:
            raise ConfigError(f"rate must be >= 0 events/s, got {rate}")
        self._rate = rate
        self._now = monotonic_s
        self._start: float | None = None

    def delay_s(self, sent: int) -> float:
        """How long to wait before sending event number ``sent`` (0-based)."""
        if not self._rate:
            return 0.0
        if self._start is None:
            self._start = self._now()
        return max(0.0, self._start + sent / self._rate - self._now())


async def paced(records: Iterable[dict[str, Any]], pacer: Pacer) -> AsyncIterator[dict[str, Any]]:
    for sent, record in enumerate(records):
        pause = pacer.delay_s(sent)
        if pause:
            await asyncio.sleep(pause)
        yield record


class Acks:
    """How many sends the broker has acknowledged so far (readable while sending)."""

    def __init__(self) -> None:
        self.count = 0

    def done(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.count += 1


async def send(
    producer: Any,  # a started AIOKafkaProducer (aiokafka ships no type information)
    topic: str,
    encoder: Encoder,
    key_field: str,
    records: AsyncIterator[dict[str, Any]],
    *,
    acks: Acks | None = None,
    window: int = 10_000,
) -> int:
    """Encode, key and send every record; returns how many the broker acknowledged.

    Up to ``window`` sends are in flight; ``acks`` counts them as they are acknowledged.
    """
    acks = acks or Acks()
    in_flight: list[asyncio.Future[Any]] = []
    async for record in records:
        key = record[key_field]
        future = await producer.send(
            topic, encoder.encode(record), key=None if key is None else str(key).encode()
        )
        future.add_done_callback(acks.done)
        in_flight.append(future)
        if len(in_flight) >= window:
            await asyncio.gather(*in_flight)
            in_flight.clear()
    await asyncio.gather(*in_flight)
    return acks.count
