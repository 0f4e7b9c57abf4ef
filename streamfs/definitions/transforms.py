"""Per-event transformations: log, scaling, bucketizing, time of day and week.

Expression nodes (:class:`~streamfs.definitions.expr.Expr`) with stated parameters,
so an aggregation can take ``Log("amount")`` or ``HourOfDay()`` as its input and
both engines compute the same value: :meth:`compile` for the worker, :meth:`sql`
for DuckDB. One-hot encoding makes several features, so it is not an expression:
see :class:`streamfs.definitions.features.OneHot`.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streamfs.definitions.expr import (
    DAY_MS,
    HOUR_MS,
    NUMERIC,
    Col,
    DataType,
    Expr,
    Fn,
    Record,
    as_expr,
    sql_literal,
)
from streamfs.errors import DefinitionError


def _normalise(node: Any) -> None:
    """A column given by name becomes a :class:`Col`, so equal specs compare equal."""
    if isinstance(node.column, str):
        object.__setattr__(node, "column", Col(node.column))


def _numeric_input(
    name: str, operand: Expr, fields: Mapping[str, DataType], event_time_field: str
) -> None:
    kind = operand.dtype(fields, event_time_field)
    if kind not in NUMERIC:
        raise DefinitionError(
            f"type mismatch: {name} needs a number, {operand.sql(event_time_field)} is {kind}"
        )


def _unary(fn: Fn, apply: Callable[[Any], Any]) -> Fn:
    def unary(r: Record) -> Any:
        v = fn(r)
        return None if v is None else apply(v)

    return unary


@dataclass(frozen=True, slots=True)
class Log(Expr):
    """``ln(x + offset)``; null where ``x + offset <= 0``."""

    column: Expr | str
    offset: float = 0.0

    def __post_init__(self) -> None:
        _normalise(self)

    def columns(self) -> frozenset[str]:
        return as_expr(self.column).columns()

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        _numeric_input("log", as_expr(self.column), fields, event_time_field)
        return "float64"

    def compile(self, event_time_field: str) -> Fn:
        offset = self.offset
        log = math.log

        def ln(v: Any) -> float | None:
            v = v + offset
            return log(v) if v > 0 else None

        return _unary(as_expr(self.column).compile(event_time_field), ln)

    def sql(self, event_time_field: str) -> str:
        x = f"({as_expr(self.column).sql(event_time_field)} + {sql_literal(float(self.offset))})"
        return f"(CASE WHEN {x} > 0 THEN ln({x}) END)"


@dataclass(frozen=True, slots=True)
class StandardScale(Expr):
    """``(x - mean) / std``, with the stated ``mean`` and ``std`` (> 0)."""

    column: Expr | str
    mean: float
    std: float

    def __post_init__(self) -> None:
        _normalise(self)
        if not self.std > 0:
            raise DefinitionError(f"standard scaling needs std > 0, got {self.std!r}")

    def columns(self) -> frozenset[str]:
        return as_expr(self.column).columns()

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        _numeric_input("standard scaling", as_expr(self.column), fields, event_time_field)
        return "float64"

    def compile(self, event_time_field: str) -> Fn:
        mean, std = float(self.mean), float(self.std)
        return _unary(as_expr(self.column).compile(event_time_field), lambda v: (v - mean) / std)

    def sql(self, event_time_field: str) -> str:
        x = as_expr(self.column).sql(event_time_field)
        return f"(({x} - {sql_literal(float(self.mean))}) / {sql_literal(float(self.std))})"


@dataclass(frozen=True, slots=True)
class MinMaxScale(Expr):
    """``(x - minimum) / (maximum - minimum)``, with the stated bounds (not clipped)."""

    column: Expr | str
    minimum: float
    maximum: float

    def __post_init__(self) -> None:
        _normalise(self)
        if not self.maximum > self.minimum:
            raise DefinitionError(
                f"min-max scaling needs maximum > minimum, got {self.minimum!r}..{self.maximum!r}"
            )

    def columns(self) -> frozenset[str]:
        return as_expr(self.column).columns()

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        _numeric_input("min-max scaling", as_expr(self.column), fields, event_time_field)
        return "float64"

    def compile(self, event_time_field: str) -> Fn:
        lo, span = float(self.minimum), float(self.maximum) - float(self.minimum)
        return _unary(as_expr(self.column).compile(event_time_field), lambda v: (v - lo) / span)

    def sql(self, event_time_field: str) -> str:
        x = as_expr(self.column).sql(event_time_field)
        lo, span = float(self.minimum), float(self.maximum) - float(self.minimum)
        return f"(({x} - {sql_literal(lo)}) / {sql_literal(span)})"


@dataclass(frozen=True, slots=True)
class Bucketize(Expr):
    """The bucket index of ``x``: 0 below ``boundaries[0]``, ``i`` for
    ``boundaries[i-1] <= x < boundaries[i]``, ``len(boundaries)`` at or above the last."""

    column: Expr | str
    boundaries: tuple[float, ...]

    def __post_init__(self) -> None:
        _normalise(self)
        object.__setattr__(self, "boundaries", tuple(self.boundaries))
        b = self.boundaries
        if not b or any(x >= y for x, y in itertools.pairwise(b)):
            raise DefinitionError(f"bucket boundaries must increase strictly, got {b!r}")

    def columns(self) -> frozenset[str]:
        return as_expr(self.column).columns()

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        _numeric_input("bucketize", as_expr(self.column), fields, event_time_field)
        return "int64"

    def compile(self, event_time_field: str) -> Fn:
        bounds = tuple(self.boundaries)
        right = bisect.bisect_right
        return _unary(as_expr(self.column).compile(event_time_field), lambda v: right(bounds, v))

    def sql(self, event_time_field: str) -> str:
        x = as_expr(self.column).sql(event_time_field)
        whens = " ".join(
            f"WHEN {x} < {sql_literal(b)} THEN {i}" for i, b in enumerate(self.boundaries)
        )
        return f"(CASE WHEN {x} IS NULL THEN NULL {whens} ELSE {len(self.boundaries)} END)"


def _time_column(column: Expr | str | None, event_time_field: str) -> Expr:
    return Col(event_time_field) if column is None else as_expr(column)


@dataclass(frozen=True, slots=True)
class HourOfDay(Expr):
    """Hour of day (0-23, UTC) of an epoch-ms field; by default the event time."""

    column: Expr | str | None = None

    def __post_init__(self) -> None:
        _normalise(self)

    def columns(self) -> frozenset[str]:
        return frozenset() if self.column is None else as_expr(self.column).columns()

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        column = _time_column(self.column, event_time_field)
        _numeric_input("hour of day", column, fields, event_time_field)
        return "int64"

    def compile(self, event_time_field: str) -> Fn:
        fn = _time_column(self.column, event_time_field).compile(event_time_field)
        return _unary(fn, lambda v: int(v) // HOUR_MS % 24)

    def sql(self, event_time_field: str) -> str:
        x = _time_column(self.column, event_time_field).sql(event_time_field)
        return f"CAST(hour(epoch_ms(CAST({x} AS BIGINT))) AS BIGINT)"


@dataclass(frozen=True, slots=True)
class DayOfWeek(Expr):
    """Day of week (Monday 0 .. Sunday 6, UTC) of an epoch-ms field; by default the event time."""

    column: Expr | str | None = None

    def __post_init__(self) -> None:
        _normalise(self)

    def columns(self) -> frozenset[str]:
        return frozenset() if self.column is None else as_expr(self.column).columns()

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        column = _time_column(self.column, event_time_field)
        _numeric_input("day of week", column, fields, event_time_field)
        return "int64"

    def compile(self, event_time_field: str) -> Fn:
        fn = _time_column(self.column, event_time_field).compile(event_time_field)
        # 1970-01-01 was a Thursday (3 with Monday = 0).
        return _unary(fn, lambda v: (int(v) // DAY_MS + 3) % 7)

    def sql(self, event_time_field: str) -> str:
        x = _time_column(self.column, event_time_field).sql(event_time_field)
        return f"CAST(isodow(epoch_ms(CAST({x} AS BIGINT))) - 1 AS BIGINT)"
