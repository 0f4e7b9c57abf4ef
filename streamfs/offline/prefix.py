"""Prefix sums for the invertible functions (count, sum, mean, variance, stddev) and last.

A window ``[start, t]`` of an invertible aggregate is the running total through
``t`` minus the running total before ``start``. So instead of a window function
evaluated at every event and query row (:mod:`streamfs.offline.sql`), these
features take one sorted pass of running totals over the events together with
probe rows (one at each ``t`` and one just before each distinct window start):
several times faster at millions of rows. ``last`` rides along: the running last
value (by ``(event_time, offset)``) through ``t`` is the window's if its time is
not before ``start``. Features sharing a running total (every count of one
filter, a sum and a mean of one input) share its column.

Exactness: counts and integer sums are exact. Float sums and means are prefix
differences: rounding relative to the running total, about 1e-16 times
(events in the entity's history / events in the window). Variance uses sums of
squares of each value's deviation from the input's mean over all the queried
events, so the spread, not the magnitude, sets the scale (values around 1e9 with
a spread of 1 keep their digits, as long as entities do not differ by orders of
magnitude); it agrees with Welford online to about 1e-9 relative, not to the
last bit.

Pure: builds strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# SQL is assembled from definitions' own SQL readings and fixed text, never from
# data values: hence the S608 waivers.
INVERTIBLE = frozenset({"count", "sum", "mean", "variance", "stddev", "last"})


@dataclass(frozen=True, slots=True)
class PrefixFeature:
    """One invertible feature: its input and filter as SQL, window and output type."""

    name: str
    function: str
    value: str
    keep: str
    window_ms: int
    hop_ms: int
    sql_type: str


def start_sql(t: str, window_ms: int, hop_ms: int) -> str:
    """``floor((t - W) / h) * h`` in integer arithmetic."""
    x = f"({t} - {window_ms})"
    return f"({x} - ((({x} % {hop_ms}) + {hop_ms}) % {hop_ms}))"


class _Columns:
    """Running aggregates by their SQL text, so features sharing one get one column."""

    def __init__(self) -> None:
        self.running: dict[str, str] = {}  # running aggregate -> column
        self.refs: dict[str, str] = {}  # per-entity reference expression -> column
        self.read: dict[tuple[str, str], str] = {}  # (probe, column) -> pivoted column

    def add(self, expression: str) -> str:
        column = self.running.get(expression)
        if column is None:
            column = self.running[expression] = f"x{len(self.running)}"
        return column

    def ref(self, expression: str) -> str:
        column = self.refs.get(expression)
        if column is None:
            column = self.refs[expression] = f"r{len(self.refs)}"
        return column

    def at(self, probe: str, column: str) -> str:
        """``column`` read at ``probe``: ``a`` through ``t``, ``b{i}`` before window start i."""
        return self.read.setdefault((probe, column), f"{probe}_{column}")


def prefix_statements(
    features: Sequence[PrefixFeature], events: str, queries: str, out: str
) -> list[str]:
    """SQL statements leaving ``out(_k, _t, feature...)`` for every row of ``queries``.

    ``events`` has ``_k``, ``_ts``, ``_off`` and the source's columns; ``queries`` the
    distinct ``(_k, _t)``.

    One window pass: each query point becomes probes (at ``t``, and at one before each
    distinct window start) unioned with the events and sorted after the events of
    their own timestamp, so a running aggregate read at a probe covers the events
    through it. One sort instead of a group-by, a running pass and an ASOF join per
    probe; the probes are then pivoted back to one row per query point.
    """
    cols = _Columns()
    specs = sorted({(f.window_ms, f.hop_ms) for f in features})
    values = []
    for f in features:
        v, kept = f"({f.value})", f"({f.keep})"
        keep = f"_q = 0 AND {kept}"  # probes count nothing
        i = specs.index((f.window_ms, f.hop_ms))
        b = f"b{i}"

        def diff(c: str, b: str = b) -> str:
            return f"(coalesce({cols.at('a', c)}, 0) - coalesce({cols.at(b, c)}, 0))"

        if f.function == "last":
            present = f"CASE WHEN {keep} AND {v} IS NOT NULL"
            at = cols.at("a", cols.add(f"max({present} THEN _ts END)"))
            last = cols.at("a", cols.add(f"last_value({present} THEN {v} END IGNORE NULLS)"))
            before = f"({start_sql('_t', f.window_ms, f.hop_ms)} - 1)"
            value = f"(CASE WHEN {at} > {before} THEN {last} END)"
            values.append(f'CAST({value} AS {f.sql_type}) AS "{f.name}"')
            continue
        n = diff(cols.add(f"count(CASE WHEN {keep} THEN {v} END)"))
        if f.function == "count":
            value = n
        elif f.function == "sum":
            value = diff(cols.add(f"sum(CASE WHEN {keep} THEN {v} END)"))
        elif f.function == "mean":
            total = diff(cols.add(f"sum(CASE WHEN {keep} THEN {v} END)"))
            value = f"(CASE WHEN {n} > 0 THEN CAST({total} AS DOUBLE) / {n} END)"
        else:
            r = cols.ref(f"(SELECT avg(CAST({v} AS DOUBLE)) FILTER (WHERE {kept}) FROM {events})")  # noqa: S608
            d = diff(cols.add(f"sum(CASE WHEN {keep} THEN {v} - {r} END)"))
            q = diff(cols.add(f"sum(CASE WHEN {keep} THEN ({v} - {r}) * ({v} - {r}) END)"))
            var = f"(CASE WHEN {n} > 0 THEN greatest(({q} - {d} * {d} / {n}) / {n}, 0) END)"
            value = var if f.function == "variance" else f"sqrt({var})"
        values.append(f'CAST({value} AS {f.sql_type}) AS "{f.name}"')
    refs = "".join(f", {expression} AS {column}" for expression, column in cols.refs.items())
    # The reference means are scalar subqueries: computed once, not per row.
    # Events sort by offset within a timestamp, probes after them (_o null): one sort
    # key fewer than ordering by (_ts, _q, _off).
    frame = "OVER (PARTITION BY _k ORDER BY _ts, _o NULLS LAST ROWS UNBOUNDED PRECEDING)"
    running = ", ".join(f"{expression} {frame} AS {c}" for expression, c in cols.running.items())
    probes = [f"SELECT _k, _t AS _ts, _t, 0 AS _p FROM {queries}"]  # noqa: S608
    probes += [
        f"SELECT _k, {start_sql('_t', w, h)} - 1, _t, {i + 1} FROM {queries}"  # noqa: S608
        for i, (w, h) in enumerate(specs)
    ]
    union = (
        f"SELECT *{refs}, coalesce(_off, -1) AS _o, NULL::BIGINT AS _t, NULL::INTEGER AS _p,"  # noqa: S608
        f" 0 AS _q FROM {events} UNION ALL BY NAME"
        f" SELECT *, NULL::BIGINT AS _o, 1 AS _q FROM ({' UNION ALL '.join(probes)})"
    )
    probe_index = {"a": 0} | {f"b{i}": i + 1 for i in range(len(specs))}
    pivot = ", ".join(
        f"any_value({c}) FILTER (WHERE _p = {probe_index[probe]}) AS {name}"
        for (probe, c), name in cols.read.items()
    )
    return [
        f"CREATE TEMP TABLE {out}_c AS SELECT _k, _t, _p, {running} FROM ({union})"  # noqa: S608
        " QUALIFY _q = 1",
        f"CREATE TEMP TABLE {out} AS SELECT _k, _t, {', '.join(values)}"  # noqa: S608
        f" FROM (SELECT _k, _t, {pivot} FROM {out}_c GROUP BY _k, _t)",
    ]
