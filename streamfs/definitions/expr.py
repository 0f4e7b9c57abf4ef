"""Per-event expressions: filters and transformations, one small AST with three readings.

Every node answers:

- ``dtype(fields)``: its type (:data:`DataType`) given the source's field types, or a
  :class:`DefinitionError` naming the column or construct at fault;
- ``compile(event_time_field)``: a plain Python callable ``record -> value`` that the
  worker calls once per event, built once from closures (no per-event tree walk
  beyond one call per node);
- ``sql(event_time_field)``: the same computation as a DuckDB expression, for the
  offline engine.

Nulls follow SQL, so both readings agree: an operator over a null is null,
``AND``/``OR``/``NOT`` are three-valued, a division by zero and a logarithm of a
non-positive number are null. A filter keeps an event only when it is true.

Nodes are frozen dataclasses (equal when they mean the same) and turn into JSON and
back (:func:`to_json`, :func:`from_json`) for the registry. Pure: no I/O imports.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from streamfs.errors import DefinitionError

DataType = Literal["int64", "float64", "string", "bool"]
DATA_TYPES: Final[tuple[DataType, ...]] = ("int64", "float64", "string", "bool")
NUMERIC: Final = frozenset({"int64", "float64"})
Value = int | float | str | bool | None
Record = Mapping[str, Any]
Fn = Callable[[Record], Any]

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS


class Expr:
    """A node of the expression tree (see the module docstring)."""

    __slots__ = ()

    def columns(self) -> frozenset[str]:
        """The event fields the expression reads (``None`` stands for the event time)."""
        raise NotImplementedError

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        raise NotImplementedError

    def compile(self, event_time_field: str) -> Fn:
        raise NotImplementedError

    def sql(self, event_time_field: str) -> str:
        raise NotImplementedError


def as_expr(value: Expr | str) -> Expr:
    """A column name as a :class:`Col`; an expression as itself."""
    return Col(value) if isinstance(value, str) else value


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: Value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DefinitionError(f"literal {value!r} is not a finite number")
        return repr(value)
    return str(value)


def literal_type(value: Value) -> DataType | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    return "string"


@dataclass(frozen=True, slots=True)
class Col(Expr):
    """An event field, by name."""

    name: str

    def columns(self) -> frozenset[str]:
        return frozenset({self.name})

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        if self.name not in fields:
            raise DefinitionError(
                f"column {self.name!r} is not a field of the source schema"
                f" (fields: {', '.join(fields)})"
            )
        return fields[self.name]

    def compile(self, event_time_field: str) -> Fn:
        name = self.name
        return lambda r: r.get(name)

    def sql(self, event_time_field: str) -> str:
        return _quote(self.name)


@dataclass(frozen=True, slots=True)
class Lit(Expr):
    """A constant."""

    value: Value

    def columns(self) -> frozenset[str]:
        return frozenset()

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        kind = literal_type(self.value)
        if kind is None:
            raise DefinitionError("NULL is only allowed in IS NULL / IS NOT NULL")
        return kind

    def compile(self, event_time_field: str) -> Fn:
        value = self.value
        return lambda r: value

    def sql(self, event_time_field: str) -> str:
        return sql_literal(self.value)


def _div(a: Any, b: Any) -> Any:
    return None if b == 0 else a / b


_ARITH: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _div,
}


def _binary(op: Callable[[Any, Any], Any], left: Expr, right: Expr, etf: str) -> Fn:
    """``op(left, right)``, null when either side is null; specialised for ``column op lit``."""
    if isinstance(left, Col) and isinstance(right, Lit):
        name, constant = left.name, right.value

        def col_lit(r: Record) -> Any:
            a = r.get(name)
            return None if a is None else op(a, constant)

        return col_lit
    lf, rf = left.compile(etf), right.compile(etf)

    def general(r: Record) -> Any:
        a = lf(r)
        if a is None:
            return None
        b = rf(r)
        return None if b is None else op(a, b)

    return general


@dataclass(frozen=True, slots=True)
class Arith(Expr):
    """``left op right`` for ``+ - * /``; ``/`` is true division, null when dividing by 0."""

    op: str
    left: Expr
    right: Expr

    def __post_init__(self) -> None:
        if self.op not in _ARITH:
            raise DefinitionError(f"unknown arithmetic operator {self.op!r}")

    def columns(self) -> frozenset[str]:
        return self.left.columns() | self.right.columns()

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        types = [side.dtype(fields, event_time_field) for side in (self.left, self.right)]
        if not all(t in NUMERIC for t in types):
            raise DefinitionError(
                f"type mismatch: {self.sql(event_time_field)} needs numbers,"
                f" got {' and '.join(types)}"
            )
        return "float64" if self.op == "/" or "float64" in types else "int64"

    def compile(self, event_time_field: str) -> Fn:
        return _binary(_ARITH[self.op], self.left, self.right, event_time_field)

    def sql(self, event_time_field: str) -> str:
        left, right = self.left.sql(event_time_field), self.right.sql(event_time_field)
        if self.op == "/":  # DuckDB: int / int is a double; / 0 is NULL only with NULLIF
            return f"(CAST({left} AS DOUBLE) / NULLIF({right}, 0))"
        return f"({left} {self.op} {right})"


_CMP: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _comparable(a: DataType, b: DataType) -> bool:
    return a == b or (a in NUMERIC and b in NUMERIC)


@dataclass(frozen=True, slots=True)
class Cmp(Expr):
    """``left op right`` for ``= != < <= > >=``."""

    op: str
    left: Expr
    right: Expr

    def __post_init__(self) -> None:
        if self.op not in _CMP:
            raise DefinitionError(f"unknown comparison operator {self.op!r}")

    def columns(self) -> frozenset[str]:
        return self.left.columns() | self.right.columns()

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        a = self.left.dtype(fields, event_time_field)
        b = self.right.dtype(fields, event_time_field)
        if not _comparable(a, b):
            raise DefinitionError(
                f"type mismatch: {self.sql(event_time_field)} compares {a} with {b}"
            )
        return "bool"

    def compile(self, event_time_field: str) -> Fn:
        return _binary(_CMP[self.op], self.left, self.right, event_time_field)

    def sql(self, event_time_field: str) -> str:
        op = "<>" if self.op == "!=" else self.op
        return f"({self.left.sql(event_time_field)} {op} {self.right.sql(event_time_field)})"


@dataclass(frozen=True, slots=True)
class In(Expr):
    """``operand [NOT] IN (v1, v2, ...)`` over non-null constants."""

    operand: Expr
    values: tuple[Value, ...]
    negate: bool = False

    def __post_init__(self) -> None:
        if not self.values or any(v is None for v in self.values):
            raise DefinitionError("IN needs a non-empty list of non-null values")

    def columns(self) -> frozenset[str]:
        return self.operand.columns()

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        kind = self.operand.dtype(fields, event_time_field)
        for value in self.values:
            other = literal_type(value)
            assert other is not None  # checked in __post_init__
            if not _comparable(kind, other):
                raise DefinitionError(
                    f"type mismatch: {self.sql(event_time_field)} compares {kind} with {other}"
                )
        return "bool"

    def compile(self, event_time_field: str) -> Fn:
        values = frozenset(self.values)
        fn = self.operand.compile(event_time_field)
        negate = self.negate

        def is_in(r: Record) -> bool | None:
            v = fn(r)
            return None if v is None else (v in values) != negate

        return is_in

    def sql(self, event_time_field: str) -> str:
        items = ", ".join(sql_literal(v) for v in self.values)
        keyword = "NOT IN" if self.negate else "IN"
        return f"({self.operand.sql(event_time_field)} {keyword} ({items}))"


@dataclass(frozen=True, slots=True)
class IsNull(Expr):
    """``operand IS [NOT] NULL``: never null itself."""

    operand: Expr
    negate: bool = False

    def columns(self) -> frozenset[str]:
        return self.operand.columns()

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        self.operand.dtype(fields, event_time_field)
        return "bool"

    def compile(self, event_time_field: str) -> Fn:
        fn = self.operand.compile(event_time_field)
        if self.negate:
            return lambda r: fn(r) is not None
        return lambda r: fn(r) is None

    def sql(self, event_time_field: str) -> str:
        return f"({self.operand.sql(event_time_field)} IS {'NOT NULL' if self.negate else 'NULL'})"


def _check_bool(items: tuple[Expr, ...], fields: Mapping[str, DataType], etf: str) -> DataType:
    for item in items:
        if item.dtype(fields, etf) != "bool":
            raise DefinitionError(f"type mismatch: {item.sql(etf)} is not a condition")
    return "bool"


@dataclass(frozen=True, slots=True)
class And(Expr):
    """All of ``items``: false if one is false, else null if one is null (SQL)."""

    items: tuple[Expr, ...]

    def columns(self) -> frozenset[str]:
        return frozenset().union(*(i.columns() for i in self.items))

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        return _check_bool(self.items, fields, event_time_field)

    def compile(self, event_time_field: str) -> Fn:
        fns = tuple(i.compile(event_time_field) for i in self.items)

        def all_of(r: Record) -> bool | None:
            unknown = False
            for fn in fns:
                v = fn(r)
                if v is False:
                    return False
                if v is None:
                    unknown = True
            return None if unknown else True

        return all_of

    def sql(self, event_time_field: str) -> str:
        return "(" + " AND ".join(i.sql(event_time_field) for i in self.items) + ")"


@dataclass(frozen=True, slots=True)
class Or(Expr):
    """Any of ``items``: true if one is true, else null if one is null (SQL)."""

    items: tuple[Expr, ...]

    def columns(self) -> frozenset[str]:
        return frozenset().union(*(i.columns() for i in self.items))

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        return _check_bool(self.items, fields, event_time_field)

    def compile(self, event_time_field: str) -> Fn:
        fns = tuple(i.compile(event_time_field) for i in self.items)

        def any_of(r: Record) -> bool | None:
            unknown = False
            for fn in fns:
                v = fn(r)
                if v is True:
                    return True
                if v is None:
                    unknown = True
            return None if unknown else False

        return any_of

    def sql(self, event_time_field: str) -> str:
        return "(" + " OR ".join(i.sql(event_time_field) for i in self.items) + ")"


@dataclass(frozen=True, slots=True)
class Not(Expr):
    """Negation; ``NOT NULL`` is null."""

    item: Expr

    def columns(self) -> frozenset[str]:
        return self.item.columns()

    def dtype(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        return _check_bool((self.item,), fields, event_time_field)

    def compile(self, event_time_field: str) -> Fn:
        fn = self.item.compile(event_time_field)

        def negated(r: Record) -> bool | None:
            v = fn(r)
            return None if v is None else not v

        return negated

    def sql(self, event_time_field: str) -> str:
        return f"(NOT {self.item.sql(event_time_field)})"


def condition(expr: Expr, event_time_field: str) -> Callable[[Record], bool]:
    """``expr`` as a filter: true only where it is true (SQL ``WHERE``: null drops the event)."""
    fn = expr.compile(event_time_field)
    return lambda r: fn(r) is True
