"""SQL text into definitions, parsed by sqlglot (PostgreSQL dialect), refused when unsupported.

Three entry points:

- :func:`parse_filter`: a ``WHERE`` condition over event fields: comparisons,
  ``[NOT] IN``, ``IS [NOT] NULL``, ``BETWEEN``, ``AND``/``OR``/``NOT``, arithmetic;
- :func:`parse_expression`: a per-event value (a column, arithmetic, ``LN(x)``);
- :func:`parse_feature`: a whole aggregation, as ``register_feature`` takes it::

      COUNT(*) FROM purchases WHERE created_at >= NOW() - INTERVAL '7 days'

  (``SELECT`` optional). The select list is one of ``COUNT(*)``, ``COUNT(x)``,
  ``COUNT(DISTINCT x)``, ``SUM/AVG/MIN/MAX(x)``, ``STDDEV/STDDEV_POP/VARIANCE/VAR_POP(x)``
  (streamfs keeps the population forms, DuckDB's ``stddev_pop``/``var_pop``; the
  sample forms are refused), ``PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY x)`` or
  ``APPROX_QUANTILE(x, q)`` (approximate, a mergeable sketch). ``FROM`` names one
  source. ``WHERE`` holds exactly one window condition ``<time> >= NOW() - INTERVAL
  '<n> <unit>'`` (``>`` too; ``CURRENT_TIMESTAMP`` for ``NOW()``; units ms to weeks),
  AND-ed with any filter. ``GROUP BY`` may name the entity key.

Everything else (joins, subqueries, ``HAVING``, ``ORDER BY``, ``LIMIT``, other
functions, months and years, which have no fixed length) is refused with a
:class:`DefinitionError` that names the construct. sqlglot is imported on first
use, so ``import streamfs`` stays light.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final

from streamfs.definitions.expr import (
    And,
    Arith,
    Cmp,
    Expr,
    In,
    IsNull,
    Lit,
    Not,
    Or,
    Value,
)
from streamfs.definitions.expr import Col as ColumnRef
from streamfs.definitions.transforms import Log
from streamfs.errors import DefinitionError

if TYPE_CHECKING:
    from sqlglot import exp

DIALECT: Final = "postgres"
_UNIT_MS: Final = {
    "MILLISECOND": 1,
    "SECOND": 1000,
    "MINUTE": 60_000,
    "HOUR": 3_600_000,
    "DAY": 86_400_000,
    "WEEK": 7 * 86_400_000,
}
_SAMPLE_FORMS: Final = re.compile(r"\b(VAR_SAMP|STDDEV_SAMP)\s*\(", re.IGNORECASE)
# Select-clause parts that may be present; any other part that is set is refused by name.
_ALLOWED_PARTS: Final = frozenset({"expressions", "from", "from_", "where", "group", "kind"})
_PART_NAMES: Final = {
    "joins": "JOIN",
    "having": "HAVING",
    "order": "ORDER BY",
    "limit": "LIMIT",
    "offset": "OFFSET",
    "with": "WITH",
    "with_": "WITH",
    "distinct": "SELECT DISTINCT",
    "laterals": "LATERAL",
    "windows": "WINDOW",
    "qualify": "QUALIFY",
}


@dataclass(frozen=True, slots=True)
class SqlFeature:
    """An aggregation parsed from SQL: what :class:`~streamfs.definitions.Aggregation` needs."""

    source: str
    function: str
    input: Expr | None
    window_ms: int
    time_column: str
    filter: Expr | None
    group_by: tuple[str, ...]


def _parse(text: str, where: str) -> exp.Expr:
    import sqlglot
    from sqlglot.errors import ParseError, TokenError

    try:
        statements = sqlglot.parse(text, read=DIALECT)
    except (ParseError, TokenError) as exc:
        raise DefinitionError(f"{where}: cannot parse SQL {text!r}: {exc}") from exc
    if len(statements) != 1 or statements[0] is None:
        raise DefinitionError(f"{where}: expected one SQL statement, got {len(statements)}")
    return statements[0]


def _unsupported(where: str, node: exp.Expr, context: str = "") -> DefinitionError:
    from sqlglot import exp

    if isinstance(node, exp.Anonymous):
        construct = f"function {node.name.upper()}"
    elif isinstance(node, exp.Func):
        construct = f"function {node.sql_name()}"
    else:
        construct = type(node).__name__.upper()
    suffix = f" {context}" if context else ""
    return DefinitionError(
        f"{where}: unsupported SQL construct {construct} in {node.sql(DIALECT)!r}{suffix}"
    )


def parse_filter(text: str, where: str) -> Expr:
    """A ``WHERE`` condition as an expression (see the module docstring)."""
    return _convert(_parse(f"SELECT 1 WHERE {text}", where).args["where"].this, where)


def parse_expression(text: str, where: str) -> Expr:
    """A per-event value (a column name, arithmetic, ``LN``) as an expression."""
    select = _parse(f"SELECT {text}", where)
    items = select.expressions
    if len(items) != 1:
        raise DefinitionError(f"{where}: expected one expression, got {text!r}")
    return _convert(items[0], where)


def _literal(node: exp.Expr, where: str) -> Value:
    from sqlglot import exp

    if isinstance(node, exp.Paren):
        return _literal(node.this, where)
    if isinstance(node, exp.Neg):
        value = _literal(node.this, where)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Literal):
        text = str(node.this)
        if node.is_string:
            return text
        return int(text) if re.fullmatch(r"\d+", text) else float(text)
    raise _unsupported(where, node, "(expected a constant)")


def _convert(node: exp.Expr, where: str) -> Expr:
    from sqlglot import exp

    if isinstance(node, exp.Paren):
        return _convert(node.this, where)
    if isinstance(node, exp.Column):
        if node.table:
            raise _unsupported(where, node, "(qualified column; name the field alone)")
        return ColumnRef(node.name)
    if isinstance(node, exp.Literal | exp.Boolean | exp.Null) or (
        isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal)
    ):
        return Lit(_literal(node, where))
    if isinstance(node, exp.Neg):
        return Arith("-", Lit(0), _convert(node.this, where))
    arith = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/"}
    cmp = {exp.EQ: "=", exp.NEQ: "!=", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">="}
    for cls, op in arith.items():
        if isinstance(node, cls):
            return Arith(op, _convert(node.this, where), _convert(node.expression, where))
    for cls, op in cmp.items():
        if isinstance(node, cls):
            return Cmp(op, _convert(node.this, where), _convert(node.expression, where))
    if isinstance(node, exp.And | exp.Or):
        items: list[Expr] = []
        for part in node.flatten():
            items.append(_convert(part, where))
        return And(tuple(items)) if isinstance(node, exp.And) else Or(tuple(items))
    if isinstance(node, exp.Not):
        inner = node.this
        if isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, exp.In):
            return _in(inner, where, negate=True)
        if isinstance(inner, exp.Is):
            return _is(inner, where, negate=True)
        return Not(_convert(node.this, where))
    if isinstance(node, exp.In):
        return _in(node, where, negate=False)
    if isinstance(node, exp.Is):
        return _is(node, where, negate=False)
    if isinstance(node, exp.Between):
        value = _convert(node.this, where)
        return And(
            (
                Cmp(">=", value, _convert(node.args["low"], where)),
                Cmp("<=", value, _convert(node.args["high"], where)),
            )
        )
    if isinstance(node, exp.Ln):
        return Log(_convert(node.this, where))
    raise _unsupported(where, node)


def _in(node: exp.Expr, where: str, negate: bool) -> Expr:
    if node.args.get("query") is not None or node.args.get("unnest") is not None:
        raise _unsupported(where, node, "(IN takes a list of constants)")
    values = tuple(_literal(v, where) for v in node.expressions)
    if any(v is None for v in values):
        raise DefinitionError(f"{where}: NULL in an IN list never matches; use IS NULL")
    return In(_convert(node.this, where), values, negate)


def _is(node: exp.Expr, where: str, negate: bool) -> Expr:
    from sqlglot import exp

    if not isinstance(node.expression, exp.Null):
        raise _unsupported(where, node, "(only IS NULL / IS NOT NULL)")
    negate = negate != bool(node.args.get("negate"))
    return IsNull(_convert(node.this, where), negate)


def _percent(node: exp.Expr, where: str) -> str:
    """``p95`` for a quantile literal 0.95 (exact decimal arithmetic, no float noise)."""
    value = _literal(node, where)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DefinitionError(f"{where}: a percentile needs a number between 0 and 1")
    fraction = Fraction(str(value)) * 100
    if not 0 < fraction <= 100:
        raise DefinitionError(f"{where}: percentile {value!r} is not between 0 and 1")
    if fraction.denominator == 1:
        return f"p{fraction.numerator}"
    return f"p{float(fraction):g}"


def _aggregate(node: exp.Expr, where: str) -> tuple[str, Expr | None]:
    from sqlglot import exp

    if isinstance(node, exp.Alias):
        node = node.this
    if isinstance(node, exp.Count):
        arg = node.this
        if isinstance(arg, exp.Star):
            return "count", None
        if isinstance(arg, exp.Distinct):
            if len(arg.expressions) != 1:
                raise _unsupported(where, node, "(COUNT(DISTINCT ...) takes one expression)")
            return "count_distinct", _convert(arg.expressions[0], where)
        return "count", _convert(arg, where)
    simple: dict[type[exp.Expr], str] = {
        exp.Sum: "sum",
        exp.Avg: "mean",
        exp.Min: "min",
        exp.Max: "max",
        exp.Stddev: "stddev",
        exp.StddevPop: "stddev",
        exp.Variance: "variance",
        exp.VariancePop: "variance",
    }
    for cls, function in simple.items():
        if type(node) is cls:
            if isinstance(node.this, exp.Distinct):
                raise _unsupported(where, node, "(DISTINCT only in COUNT)")
            return function, _convert(node.this, where)
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont):
        order = node.expression
        keys = order.expressions if isinstance(order, exp.Order) else []
        if len(keys) != 1 or keys[0].args.get("desc"):
            raise _unsupported(where, node, "(needs WITHIN GROUP (ORDER BY x))")
        return _percent(node.this.this, where), _convert(keys[0].this, where)
    if isinstance(node, exp.ApproxQuantile):
        return _percent(node.args["quantile"], where), _convert(node.this, where)
    if isinstance(node, exp.StddevSamp):
        raise _unsupported(where, node, "(streamfs computes the population form: STDDEV_POP)")
    raise _unsupported(where, node, "(expected COUNT, SUM, AVG, MIN, MAX, STDDEV, VARIANCE"
                       " or a percentile)")  # fmt: skip


def _window(node: exp.Expr) -> tuple[str, exp.Expr] | None:
    """``(time column, interval)`` if ``node`` is ``col >= NOW() - INTERVAL ...``."""
    from sqlglot import exp

    if isinstance(node, exp.GTE | exp.GT):
        column, bound = node.this, node.expression
    elif isinstance(node, exp.LTE | exp.LT):
        column, bound = node.expression, node.this
    else:
        return None
    if (
        isinstance(column, exp.Column)
        and isinstance(bound, exp.Sub)
        and isinstance(bound.this, exp.CurrentTimestamp)
    ):
        return column.name, bound.expression
    return None


def _interval_ms(node: exp.Expr, where: str) -> int:
    from sqlglot import exp

    if not isinstance(node, exp.Interval):
        raise _unsupported(where, node, "(the window is NOW() - INTERVAL '<n> <unit>')")
    amount = str(node.this.this) if node.this is not None else ""
    unit_node: Any = node.args.get("unit")
    unit = str(unit_node.name if unit_node is not None else "").upper().rstrip("S")
    if not amount.isdigit() or int(amount) <= 0:
        raise DefinitionError(f"{where}: interval {node.sql(DIALECT)!r} needs a whole number > 0")
    if unit not in _UNIT_MS:
        raise DefinitionError(
            f"{where}: unsupported interval unit {unit or '(none)'} in {node.sql(DIALECT)!r};"
            " use milliseconds, seconds, minutes, hours, days or weeks"
        )
    return int(amount) * _UNIT_MS[unit]


def parse_feature(text: str, where: str) -> SqlFeature:
    """An aggregation in SQL (see the module docstring) as a :class:`SqlFeature`."""
    from sqlglot import exp

    body = text.strip().rstrip(";")
    if not re.match(r"select\b", body, re.IGNORECASE):
        body = f"SELECT {body}"
    if match := _SAMPLE_FORMS.search(body):
        raise DefinitionError(
            f"{where}: unsupported SQL construct function {match.group(1).upper()}: streamfs"
            " computes the population forms (STDDEV_POP, VAR_POP)"
        )
    select = _parse(body, where)
    if not isinstance(select, exp.Select):
        raise _unsupported(where, select, "(expected SELECT <aggregate> FROM <source> ...)")
    for part, value in select.args.items():
        if value and part not in _ALLOWED_PARTS:
            name = _PART_NAMES.get(part, part.upper())
            raise DefinitionError(f"{where}: unsupported SQL construct {name} in {text!r}")
    if len(select.expressions) != 1:
        raise DefinitionError(
            f"{where}: select exactly one aggregate, got {len(select.expressions)} in {text!r}"
        )
    function, value = _aggregate(select.expressions[0], where)

    from_ = select.args.get("from") or select.args.get("from_")
    table = from_.this if from_ is not None else None
    if not isinstance(table, exp.Table) or table.args.get("db") or not table.name:
        shown = table if table is not None else select
        raise DefinitionError(
            f"{where}: FROM must name one source; got {shown.sql(DIALECT)!r} in {text!r}"
        )

    where_clause = select.args.get("where")
    conditions = list(where_clause.this.flatten()) if where_clause is not None else []
    if where_clause is not None and not isinstance(where_clause.this, exp.And):
        conditions = [where_clause.this]
    windows = [(c, w) for c in conditions if (w := _window(c)) is not None]
    if len(windows) != 1:
        raise DefinitionError(
            f"{where}: needs exactly one window condition"
            " `WHERE <event time> >= NOW() - INTERVAL '<n> <unit>'`, found"
            f" {len(windows)} in {text!r}"
        )
    (window_node, (time_column, interval)), = windows  # fmt: skip
    window_ms = _interval_ms(interval, where)
    rest = [_convert(c, where) for c in conditions if c is not window_node]
    condition: Expr | None = None
    if len(rest) == 1:
        condition = rest[0]
    elif rest:
        condition = And(tuple(rest))

    group = select.args.get("group")
    group_by: list[str] = []
    for key in group.expressions if group is not None else []:
        if not isinstance(key, exp.Column):
            raise _unsupported(where, key, "(GROUP BY names the entity key column)")
        group_by.append(key.name)
    return SqlFeature(
        source=table.name,
        function=function,
        input=value,
        window_ms=window_ms,
        time_column=time_column,
        filter=condition,
        group_by=tuple(group_by),
    )
