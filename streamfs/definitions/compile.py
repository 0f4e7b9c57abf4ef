"""Definitions into the runtime's terms: a view's tile :class:`Layout` and its per-event inputs.

:func:`compile_view` turns a :class:`FeatureView` into what the worker folds events
with (:class:`streamfs.tiles.EntityTiles` over ``layout``, fed ``inputs(record)``)
and what readers finish values with (:func:`derive`). One tile feature per
aggregation output, in declaration order; a one-hot aggregation adds one per
category. ``inputs(record)`` gives each tile feature its value for the event, or
``None`` when the event does not count for it (filtered out, or a null input).
Derived features have no tiles: readers compute them from the merged values,
online and offline alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamfs.aggregators import make
from streamfs.definitions.expr import Expr, Fn, Record, as_expr
from streamfs.definitions.features import Aggregation, Derived, FeatureView, OneHot
from streamfs.tiles import Feature, Layout


@dataclass(frozen=True, slots=True)
class CompiledView:
    """A view ready to run: ``inputs(record)`` is aligned with ``layout.features``."""

    view: FeatureView
    layout: Layout
    inputs: Callable[[Record], Sequence[Any]]
    derived: tuple[Derived, ...]

    def finish(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` (merged tiles, by name) with this view's derived features added."""
        return derive(self.derived, values)


def _one(value: Fn | None, keep: Callable[[Record], bool] | None) -> Fn:
    if value is None:  # COUNT(*): every (kept) event counts once
        if keep is None:
            return lambda r: 1
        return lambda r: 1 if keep(r) else None
    if keep is None:
        return value
    return lambda r: value(r) if keep(r) else None


def _indicator(value: Fn, category: str, keep: Callable[[Record], bool] | None) -> Fn:
    def one_hot(r: Record) -> int | None:
        if keep is not None and not keep(r):
            return None
        v = value(r)
        return None if v is None else int(v == category)

    return one_hot


def _input_fns(aggregation: Aggregation, event_time_field: str) -> list[Fn]:
    condition = aggregation.filter_expr
    keep: Callable[[Record], bool] | None = None
    if condition is not None:
        test = condition.compile(event_time_field)

        def keep(r: Record) -> bool:
            return test(r) is True  # SQL WHERE: null drops the event

    source = aggregation.input_expr
    if isinstance(source, OneHot):
        value = as_expr(source.column).compile(event_time_field)
        return [_indicator(value, c, keep) for c in source.categories]
    return [_one(None if source is None else source.compile(event_time_field), keep)]


def compile_view(view: FeatureView) -> CompiledView:
    """The tile layout and per-event inputs of ``view`` (see the module docstring)."""
    features: list[Feature] = []
    # Many features read the same input (count, sum and mean of one column, over several
    # windows): each distinct (input, filter, one-hot position) is computed once per
    # event. Keyed by repr, which tells 1 from 1.0 where dataclass equality does not.
    fns: list[Fn] = []
    where: list[int] = []  # per tile feature, its input's place in fns
    seen: dict[tuple[str, str, int], int] = {}
    event_time_field = view.source.event_time_field
    for aggregation in view.aggregations:
        same = (repr(aggregation.input_expr), repr(aggregation.filter_expr))
        for position, (name, fn) in enumerate(
            zip(aggregation.output_names(), _input_fns(aggregation, event_time_field), strict=True)
        ):
            features.append(Feature(name, make(aggregation.function), aggregation.window_spec))
            place = seen.setdefault((*same, position), len(fns))
            if place == len(fns):
                fns.append(fn)
            where.append(place)
    functions, places = tuple(fns), tuple(where)

    def inputs(record: Record) -> list[Any]:
        values = [fn(record) for fn in functions]
        return [values[place] for place in places]

    return CompiledView(view, Layout.of(features), inputs, view.derived)


def derive(derived: Iterable[Derived], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` plus each derived feature, in order (a derived input may be derived)."""
    out = dict(values)
    for feature in derived:
        out[feature.name] = feature.evaluate(out)
    return out


def filter_sql(expression: Expr | None, event_time_field: str) -> str:
    """The DuckDB condition of a filter (``TRUE`` when there is none)."""
    return "TRUE" if expression is None else expression.sql(event_time_field)
