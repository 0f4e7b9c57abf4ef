"""DESIGN §3's window rule as DuckDB SQL, built from the definitions the worker compiles.

Each aggregation becomes one window aggregate over the union of the source's
events and the query points (entity, ``t``), partitioned by entity and ordered by
time, with a frame that starts at the sawtooth tail::

    agg(input) FILTER (WHERE _q = 0 AND filter)
      OVER (PARTITION BY _k ORDER BY _ts
            RANGE BETWEEN (_ts - floor((_ts - W) / h) * h) PRECEDING AND CURRENT ROW)

``RANGE ... CURRENT ROW`` takes every peer, so events stamped exactly ``t`` count
and nothing later does. The inputs, filters and one-hot indicators are the
expressions' own SQL readings (:meth:`streamfs.definitions.Expr.sql`), so they
mean what the worker's compiled closures mean; derived features are
:meth:`streamfs.definitions.Derived.sql`.

Functions map onto DuckDB aggregates with the online empty values (count, sum and
count_distinct 0, the rest null)::

    count -> count     sum -> sum          mean -> avg      min/max -> min/max
    variance -> var_pop                    stddev -> stddev_pop
    first/last -> arg_min/arg_max by (event_time, offset): the online tie rule
    count_distinct -> count(DISTINCT): exact; online is exact up to 1,000
        distinct values per window, then HLL within 5% (see streamfs.sketches)
    pN -> quantile_disc at the sorted index floor(q * n): exact here; online is the
        same up to 200 values per window, then KLL, within about 1.3% of rank

Float sums, means and variances agree with the online engine up to rounding
(a few ulps), as tile merges do among themselves.

That is the reference reading. By default the functions that index ranges of
sorted events answer exactly (count, sum, mean, variance, stddev, first, last, and
min/max of numbers) are planned as :class:`VectorFeature` instead: DuckDB only
evaluates their input and filter per event, numpy does the windows
(:mod:`streamfs.offline.vector`).

Pure: builds strings, imports no database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from streamfs.definitions import Aggregation, FeatureView, OneHot
from streamfs.definitions.compile import filter_sql
from streamfs.definitions.expr import NUMERIC, DataType, as_expr, sql_literal
from streamfs.errors import StreamfsError

_SQL_TYPES = {"int64": "BIGINT", "float64": "DOUBLE", "string": "VARCHAR", "bool": "BOOLEAN"}
_PLAIN = {
    "count": "count",
    "sum": "sum",
    "mean": "avg",
    "min": "min",
    "max": "max",
    "variance": "var_pop",
    "stddev": "stddev_pop",
    "count_distinct": "count",
}
_ZERO_WHEN_EMPTY = frozenset({"count", "sum", "count_distinct"})
VECTOR = frozenset({"count", "sum", "mean", "variance", "stddev", "first", "last", "min", "max"})
_NUMBERS_ONLY = frozenset({"min", "max"})  # min/max of strings stay in SQL (its collation)


class OfflineQueryError(StreamfsError):
    """A historical query cannot be built (a bad column, an unknown function); names it."""


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def frame(window_ms: int, hop_ms: int) -> str:
    """The sawtooth frame: from ``floor((t - W) / h) * h`` to ``t``, integer-exact."""
    # DuckDB's % keeps the dividend's sign; ((x % h) + h) % h is the floor modulus.
    x = f"(_ts - {window_ms})"
    start = f"({x} - ((({x} % {hop_ms}) + {hop_ms}) % {hop_ms}))"
    return f"PARTITION BY _k ORDER BY _ts RANGE BETWEEN (_ts - {start}) PRECEDING AND CURRENT ROW"


def _quantile(function: str) -> float:
    if function == "percentile":
        return 0.5
    return float(Fraction(function[1:]) / 100)


def _aggregate(function: str, value: str, keep: str) -> str:
    if function in ("first", "last"):
        pick = "arg_min" if function == "first" else "arg_max"
        return f"{pick}({value}, (_ts, _off)) FILTER (WHERE {keep} AND ({value}) IS NOT NULL)"
    if function in _PLAIN:
        distinct = "DISTINCT " if function == "count_distinct" else ""
        return f"{_PLAIN[function]}({distinct}{value}) FILTER (WHERE {keep})"
    if function == "percentile" or function.startswith("p"):
        # quantile_disc picks sorted index ceil(q * n) - 1; nudged by 1e-9 that is
        # floor(q * n), DataSketches' exclusive rank rule, the online exact answer.
        q = min(_quantile(function) + 1e-9, 1.0)
        return f"quantile_disc(CAST({value} AS DOUBLE), {q!r}) FILTER (WHERE {keep})"
    raise OfflineQueryError(f"aggregation function {function!r} has no offline form")


@dataclass(frozen=True, slots=True)
class VectorFeature:
    """One feature for the numpy engine: its input and filter as SQL, window, output type.

    ``selection`` is the condition an event must meet to count (the filter holds and
    the input is not null); features with the same one share their index ranges.
    """

    name: str
    function: str
    value: str
    keep: str
    window_ms: int
    hop_ms: int
    dtype: DataType

    @property
    def selection(self) -> str:
        if self.keep == "TRUE" and self.value == "1":
            return "TRUE"
        return f"coalesce(({self.keep}) AND ({self.value}) IS NOT NULL, false)"


@dataclass(frozen=True, slots=True)
class ViewQuery:
    """The window SQL of one view: named windows and ``(feature, expression)`` pairs.

    ``aggregates`` reference the windows by name (``w0``, ``w1``...); ``derived`` are
    expressions over the aggregate columns, to compute in an outer query.
    """

    windows: tuple[tuple[str, str], ...]
    aggregates: tuple[tuple[str, str], ...]
    derived: tuple[tuple[str, str], ...]
    vector: tuple[VectorFeature, ...] = ()
    columns: frozenset[str] = frozenset()  # the source columns the features read
    zero_when_empty: frozenset[str] = frozenset()  # aggregates whose empty value is 0


def view_query(view: FeatureView, names: Sequence[str], use_vector: bool = True) -> ViewQuery:
    """The SQL for the features ``names`` of ``view`` (derived ones pull in their inputs).

    With ``use_vector`` the functions of :data:`VECTOR` go to ``vector`` instead of
    ``aggregates`` (min/max only of numbers).
    """
    etf = view.source.event_time_field
    types = view.feature_types()
    wanted = set(names)
    for feature in reversed(view.derived):  # a derived input may itself be derived
        if feature.name in wanted:
            wanted.update(feature.inputs)
    windows: dict[tuple[int, int], str] = {}
    aggregates: list[tuple[str, str]] = []
    vector: list[VectorFeature] = []
    zero: set[str] = set()
    read: set[str] = set()
    for aggregation in view.aggregations:
        for name, value in zip(aggregation.output_names(), _inputs(aggregation, etf), strict=True):
            if name not in wanted:
                continue
            read |= _columns(aggregation, etf)
            function = aggregation.function
            if (
                use_vector
                and function in VECTOR
                and (function not in _NUMBERS_ONLY or types[name] in NUMERIC)
            ):
                vector.append(
                    VectorFeature(
                        name,
                        function,
                        value,
                        filter_sql(aggregation.filter_expr, etf),
                        aggregation.window_ms,
                        aggregation.hop_ms,
                        types[name],
                    )
                )
                continue
            spec = (aggregation.window_ms, aggregation.hop_ms)
            window = windows.setdefault(spec, f"w{len(windows)}")
            keep = f"_q = 0 AND ({filter_sql(aggregation.filter_expr, etf)})"
            expression = f"{_aggregate(aggregation.function, value, keep)} OVER {window}"
            if aggregation.function in _ZERO_WHEN_EMPTY:
                expression = f"coalesce({expression}, 0)"
                zero.add(name)
            aggregates.append((name, f"CAST({expression} AS {_SQL_TYPES[types[name]]})"))
    columns = {name: quote(name) for name, _ in aggregates}
    columns.update((f.name, quote(f.name)) for f in vector)
    derived = []
    for feature in view.derived:  # inline each so a derived input may be derived
        if feature.name in wanted:
            expression = f"CAST({feature.sql(columns)} AS {_SQL_TYPES[types[feature.name]]})"
            columns[feature.name] = expression
            derived.append((feature.name, expression))
    return ViewQuery(
        tuple((name, frame(*spec)) for spec, name in windows.items()),
        tuple(aggregates),
        tuple(derived),
        tuple(vector),
        frozenset(read),
        frozenset(zero),
    )


def _columns(aggregation: Aggregation, etf: str) -> frozenset[str]:
    source = aggregation.input_expr
    read = frozenset[str]()
    if isinstance(source, OneHot):
        read = as_expr(source.column).columns()
    elif source is not None:
        read = source.columns()
    condition = aggregation.filter_expr
    if condition is not None:
        read |= condition.columns()
    return frozenset(etf if c is None else c for c in read)


def _inputs(aggregation: Aggregation, etf: str) -> list[str]:
    source = aggregation.input_expr
    if source is None:
        return ["1"]
    if isinstance(source, OneHot):
        column = as_expr(source.column).sql(etf)
        return [f"CAST(({column}) = {sql_literal(c)} AS BIGINT)" for c in source.categories]
    return [source.sql(etf)]
