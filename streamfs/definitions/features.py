"""What users declare about features: Entity, Aggregation, Derived, FeatureView.

An :class:`Aggregation` is DESIGN §3's ``(function, input, window W, hop h, filter)``
and maps one to one onto the runtime: ``function`` is a name that
:func:`streamfs.aggregators.make` knows (``count``, ``sum``, ..., ``p95``), the
window and hop become a :class:`streamfs.windows.WindowSpec` (the hop defaults to
:func:`streamfs.windows.default_hop_ms`). Its input is a column name, a per-event
expression (:mod:`streamfs.definitions.expr`, or SQL text such as
``"amount * items"``), :class:`OneHot` (one feature per category), or ``None``
(count events). ``filter`` is SQL text (``"amount > 10 AND coupon IS NULL"``).

A :class:`Derived` feature combines other features' values (ratio, difference,
product) after they are computed; :meth:`Derived.evaluate` is the one piece of
code both the online and the offline path call.

A :class:`FeatureView` ties features to an :class:`Entity` and a
:class:`~streamfs.definitions.source.Source`, and checks itself when built: every
column exists in the source's reader schema, every input has a type the function
takes, every window is a whole multiple of its hop, every name is unique, every
declared ``data_type`` is the one the feature produces. Errors name the view and
the feature. Checks across views (a derived input in another view, a name used
twice in a topology) happen at apply, in :mod:`streamfs.registry`.

Pure Python: nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from streamfs.aggregators import AGGREGATORS, make
from streamfs.definitions.expr import (
    NUMERIC,
    DataType,
    Expr,
    as_expr,
)
from streamfs.definitions.source import Source, record_fields
from streamfs.errors import DefinitionError
from streamfs.windows import WindowSpec, default_hop_ms

Duration = int | str | timedelta
"""Milliseconds as an int, a ``timedelta``, or text: ``"90s"``, ``"5m"``, ``"1h"``, ``"7d"``."""

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_DURATION: Final = re.compile(r"\s*(\d+)\s*(ms|s|m|h|d|w)\s*")
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_UNIT_MS["w"] = 7 * _UNIT_MS["d"]
_KEY_TYPES: Final = {"string": "string", "int64": "int64"}
_AVRO_TYPES: Final[dict[str, DataType]] = {
    "int": "int64",
    "long": "int64",
    "float": "float64",
    "double": "float64",
    "string": "string",
    "boolean": "bool",
}
_FLOAT_RESULT: Final = frozenset({"mean", "variance", "stddev"})
_NUMERIC_INPUT: Final = frozenset({"sum", "mean", "variance", "stddev"})
_DERIVED_OPS: Final = ("ratio", "difference", "product")


def duration_ms(value: Duration, what: str) -> int:
    """``value`` in whole milliseconds (see :data:`Duration`); ``what`` names it in errors."""
    if isinstance(value, timedelta):
        ms = value // timedelta(milliseconds=1)
    elif isinstance(value, bool):
        raise DefinitionError(f"{what}: {value!r} is not a duration")
    elif isinstance(value, int):
        ms = value
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        ms = int(match.group(1)) * _UNIT_MS[match.group(2)]
    else:
        raise DefinitionError(
            f"{what}: {value!r} is not a duration (ms as an int, a timedelta, or '90s', '5m',"
            " '1h', '7d')"
        )
    if ms <= 0:
        raise DefinitionError(f"{what}: {value!r} must be positive")
    return ms


def check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DefinitionError(
            f"{kind} {name!r}: a name is 1-128 letters, digits and '_', not starting with a digit"
        )


def check_data_type(where: str, data_type: str) -> DataType:
    for known in ("int64", "float64", "string", "bool"):
        if data_type == known:
            return known
    raise DefinitionError(
        f"{where}: data_type {data_type!r} is not one of int64, float64, string, bool"
    )


def avro_field_types(source: Source) -> dict[str, DataType]:
    """The source's readable fields and their types (other Avro types are left out)."""
    out: dict[str, DataType] = {}
    for name, avro_type in record_fields(source.name, source.reader_schema).items():
        if isinstance(avro_type, list):
            branches = [t for t in avro_type if t != "null"]
            avro_type = branches[0] if len(branches) == 1 else None
        if isinstance(avro_type, dict):
            avro_type = "string" if avro_type.get("type") == "enum" else avro_type.get("type")
        if isinstance(avro_type, str) and avro_type in _AVRO_TYPES:
            out[name] = _AVRO_TYPES[avro_type]
    return out


@dataclass(frozen=True, slots=True)
class Entity:
    """Who features describe: ``user`` keyed by ``user_id`` (a string or an int64)."""

    name: str
    join_keys: tuple[str, ...]
    key_type: str = "string"
    description: str = ""

    def __post_init__(self) -> None:
        check_name("entity", self.name)
        if isinstance(self.join_keys, str):
            object.__setattr__(self, "join_keys", (self.join_keys,))
        if not self.join_keys or not all(isinstance(k, str) and k for k in self.join_keys):
            raise DefinitionError(f"entity {self.name!r}: join_keys must name at least one key")
        if self.key_type not in _KEY_TYPES:
            raise DefinitionError(
                f"entity {self.name!r}: key_type {self.key_type!r} is not string or int64"
            )


@dataclass(frozen=True, slots=True)
class OneHot:
    """One indicator (0/1) per category of a string input: one feature each, named
    ``{aggregation name}_{category}`` (the category made a name: lowercase, ``_``)."""

    column: Expr | str
    categories: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "column", as_expr(self.column))
        if isinstance(self.categories, str) or not self.categories:
            raise DefinitionError("one-hot needs a non-empty tuple of categories")
        object.__setattr__(self, "categories", tuple(self.categories))
        names = [category_name(c) for c in self.categories]
        if len(set(names)) != len(names):
            raise DefinitionError(f"one-hot categories repeat once made names: {names}")


def category_name(category: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(category).lower()).strip("_") or "empty"


Input = Expr | OneHot | str | None


@dataclass(frozen=True, slots=True)
class Aggregation:
    """``function`` of ``input`` over a sawtooth ``window`` in steps of ``hop`` (see module doc).

    After construction ``window`` and ``hop`` are whole milliseconds (also as
    ``window_ms`` / ``hop_ms``), ``input`` is an :class:`Expr`, :class:`OneHot` or
    ``None``, and ``filter`` is an :class:`Expr` or ``None``.
    """

    name: str
    function: str
    input: Input = None
    window: Duration | None = None
    hop: Duration | None = None
    filter: Expr | str | None = None
    data_type: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        check_name("feature", self.name)
        where = f"feature {self.name!r}"
        try:
            make(self.function)
        except ValueError as exc:
            raise DefinitionError(f"{where}: function: {exc}") from exc
        if self.window is None:
            raise DefinitionError(f"{where}: window is required (e.g. window='7d')")
        window_ms = duration_ms(self.window, f"{where}: window")
        if self.hop is None:
            hop_ms = default_hop_ms(window_ms)
        else:
            hop_ms = duration_ms(self.hop, f"{where}: hop")
        try:
            WindowSpec(window_ms, hop_ms)
        except ValueError as exc:
            raise DefinitionError(f"{where}: window: {exc}") from exc
        object.__setattr__(self, "window", window_ms)
        object.__setattr__(self, "hop", hop_ms)
        if isinstance(self.input, str):
            from streamfs.definitions.sql import parse_expression

            object.__setattr__(self, "input", parse_expression(self.input, where))
        if isinstance(self.filter, str):
            from streamfs.definitions.sql import parse_filter

            object.__setattr__(self, "filter", parse_filter(self.filter, where))
        if self.input is None and self.function != "count":
            raise DefinitionError(f"{where}: {self.function} needs an input column")
        if self.data_type is not None:
            check_data_type(where, self.data_type)

    @property
    def window_ms(self) -> int:
        assert isinstance(self.window, int)  # normalised in __post_init__
        return self.window

    @property
    def hop_ms(self) -> int:
        assert isinstance(self.hop, int)  # normalised in __post_init__
        return self.hop

    @property
    def window_spec(self) -> WindowSpec:
        return WindowSpec(self.window_ms, self.hop_ms)

    @property
    def input_expr(self) -> Expr | OneHot | None:
        return as_expr(self.input) if isinstance(self.input, str) else self.input

    @property
    def filter_expr(self) -> Expr | None:
        return as_expr(self.filter) if isinstance(self.filter, str) else self.filter

    def output_names(self) -> tuple[str, ...]:
        """The feature names this produces: its own, or one per one-hot category."""
        if isinstance(self.input, OneHot):
            return tuple(f"{self.name}_{category_name(c)}" for c in self.input.categories)
        return (self.name,)

    def output_type(self, fields: Mapping[str, DataType], event_time_field: str) -> DataType:
        """The type of the values produced, checking the input and filter against ``fields``."""
        filter_expr = self.filter_expr
        if filter_expr is not None and filter_expr.dtype(fields, event_time_field) != "bool":
            raise DefinitionError(f"filter {filter_expr.sql(event_time_field)} is not a condition")
        source = self.input_expr
        if source is None:
            input_type: DataType = "int64"
        elif isinstance(source, OneHot):
            kind = as_expr(source.column).dtype(fields, event_time_field)
            if kind != "string":
                raise DefinitionError(f"type mismatch: one-hot needs a string input, got {kind}")
            input_type = "int64"
        else:
            input_type = source.dtype(fields, event_time_field)
        function = self.function
        if function in ("count", "count_distinct"):
            return "int64"
        numeric = function in _NUMERIC_INPUT or function.startswith("p") or function == "percentile"
        if numeric and input_type not in NUMERIC:
            raise DefinitionError(
                f"type mismatch: {function} needs a numeric input, got {input_type}"
            )
        if function in _FLOAT_RESULT or function.startswith("p") or function == "percentile":
            return "float64"
        return input_type  # sum, min, max, first, last keep the input's type


@dataclass(frozen=True, slots=True)
class Derived:
    """A feature computed from other features' values: ``ratio`` (a / b, null when b is 0),
    ``difference`` (a - b) or ``product`` (a * b); null when an input is null."""

    name: str
    op: str
    inputs: tuple[str, str]
    data_type: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        check_name("feature", self.name)
        where = f"feature {self.name!r}"
        if self.op not in _DERIVED_OPS:
            raise DefinitionError(
                f"{where}: op {self.op!r} is not one of {', '.join(_DERIVED_OPS)}"
            )
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if len(self.inputs) != 2 or not all(isinstance(i, str) for i in self.inputs):
            raise DefinitionError(f"{where}: inputs must be two feature names")
        if self.data_type is not None:
            check_data_type(where, self.data_type)

    def output_type(self, input_types: Sequence[DataType]) -> DataType:
        if not all(t in NUMERIC for t in input_types):
            raise DefinitionError(
                f"type mismatch: {self.op} needs numeric inputs, got {', '.join(input_types)}"
            )
        if self.op == "ratio" or "float64" in input_types:
            return "float64"
        return "int64"

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """The value from its inputs' values (the same code online and offline)."""
        a, b = values.get(self.inputs[0]), values.get(self.inputs[1])
        if a is None or b is None:
            return None
        if self.op == "ratio":
            return None if b == 0 else a / b
        if self.op == "difference":
            return a - b
        return a * b

    def sql(self, columns: Mapping[str, str]) -> str:
        """The same as a DuckDB expression over the input features' columns."""
        a, b = columns[self.inputs[0]], columns[self.inputs[1]]
        if self.op == "ratio":
            return f"(CAST({a} AS DOUBLE) / NULLIF({b}, 0))"
        return f"({a} {'-' if self.op == 'difference' else '*'} {b})"


Feature = Aggregation | Derived


def provisional_type(feature: Derived) -> DataType:
    """A derived feature's type before its inputs (in other views) are known."""
    if feature.op == "ratio":
        return "float64"
    return check_data_type(f"feature {feature.name!r}", feature.data_type or "float64")


@dataclass(frozen=True, slots=True)
class FeatureView:
    """Features of one entity computed from one source (see the module docstring).

    ``ttl``: how long an entity's online state outlives its last event; at least
    the longest window plus its hop (the default), so no value still in a window
    expires.
    """

    name: str
    entity: Entity
    source: Source
    features: tuple[Feature, ...]
    ttl: Duration | None = None
    owner: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    _types: dict[str, DataType] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_name("feature view", self.name)
        where = f"feature view {self.name!r}"
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "tags", dict(self.tags))
        if not isinstance(self.entity, Entity) or not isinstance(self.source, Source):
            raise DefinitionError(f"{where}: entity must be an Entity and source a Source")
        if not self.features:
            raise DefinitionError(f"{where}: features is empty")
        if len(self.entity.join_keys) != 1:
            raise DefinitionError(
                f"{where}: entity {self.entity.name!r} has join keys {self.entity.join_keys};"
                " a source supplies one key field, so a view's entity needs exactly one"
            )
        fields = avro_field_types(self.source)
        key_type = fields.get(self.source.key_field)
        if key_type != self.entity.key_type:
            raise DefinitionError(
                f"{where}: type mismatch: source {self.source.name!r} key_field"
                f" {self.source.key_field!r} is {key_type}, entity {self.entity.name!r} key_type"
                f" is {self.entity.key_type}"
            )
        types = self._check_features(where, fields)
        longest = max(
            (a.window_ms + a.hop_ms for a in self.features if isinstance(a, Aggregation)),
            default=0,
        )
        ttl_ms = longest if self.ttl is None else duration_ms(self.ttl, f"{where}: ttl")
        if ttl_ms < longest:
            raise DefinitionError(
                f"{where}: ttl of {ttl_ms} ms is shorter than the longest window plus its hop"
                f" ({longest} ms): values still inside a window would expire"
            )
        object.__setattr__(self, "ttl", ttl_ms)
        self._types.update(types)

    def _check_features(self, where: str, fields: Mapping[str, DataType]) -> dict[str, DataType]:
        types: dict[str, DataType] = {}
        event_time = self.source.event_time_field
        for feature in self.features:
            at = f"{where}, feature {feature.name!r}"
            if isinstance(feature, Aggregation):
                try:
                    kind = feature.output_type(fields, event_time)
                except DefinitionError as exc:
                    raise DefinitionError(f"{at}: {exc}") from exc
                names = feature.output_names()
            elif isinstance(feature, Derived):
                if all(i in types for i in feature.inputs):
                    try:
                        kind = feature.output_type([types[i] for i in feature.inputs])
                    except DefinitionError as exc:
                        raise DefinitionError(f"{at}: {exc}") from exc
                else:  # inputs from other views: checked at apply (streamfs.registry.validate)
                    kind = provisional_type(feature)
                names = (feature.name,)
            else:
                raise DefinitionError(f"{at}: is a {type(feature).__name__}, not a feature")
            if feature.data_type is not None and feature.data_type != kind:
                raise DefinitionError(
                    f"{at}: type mismatch: data_type is {feature.data_type} but"
                    f" {getattr(feature, 'function', getattr(feature, 'op', ''))} produces {kind}"
                )
            for name in names:
                if name in types:
                    raise DefinitionError(f"{at}: duplicate feature name {name!r}")
                types[name] = kind
        return types

    @property
    def ttl_ms(self) -> int:
        assert isinstance(self.ttl, int)  # normalised in __post_init__
        return self.ttl

    @property
    def aggregations(self) -> tuple[Aggregation, ...]:
        return tuple(f for f in self.features if isinstance(f, Aggregation))

    @property
    def derived(self) -> tuple[Derived, ...]:
        return tuple(f for f in self.features if isinstance(f, Derived))

    def feature_types(self) -> dict[str, DataType]:
        """Every feature name this view produces (one-hot expanded), with its type."""
        return dict(self._types)


__all__ = [
    "AGGREGATORS",
    "Aggregation",
    "Derived",
    "Duration",
    "Entity",
    "Feature",
    "FeatureView",
    "OneHot",
    "duration_ms",
]
