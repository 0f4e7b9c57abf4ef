"""Definitions to JSON and back: the form the registry stores and diffs.

The JSON is plain data with sorted keys and no defaults left implicit, so two specs
are equal exactly when their JSON is; windows, hops and TTLs are whole
milliseconds (``window_ms``), expressions are trees of ``{"node": ClassName, ...}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from streamfs.definitions import transforms
from streamfs.definitions.expr import (
    And,
    Arith,
    Cmp,
    Col,
    Expr,
    In,
    IsNull,
    Lit,
    Not,
    Or,
    as_expr,
)
from streamfs.definitions.features import Aggregation, Derived, Entity, Feature, FeatureView, OneHot
from streamfs.definitions.source import Source
from streamfs.errors import DefinitionError

JSON = Any
_NODES: Final[dict[str, type[Expr]]] = {
    cls.__name__: cls
    for cls in (
        Col, Lit, Arith, Cmp, In, IsNull, And, Or, Not,
        transforms.Log, transforms.StandardScale, transforms.MinMaxScale,
        transforms.Bucketize, transforms.HourOfDay, transforms.DayOfWeek,
    )
}  # fmt: skip
_CHILDREN: Final = frozenset({"column", "left", "right", "operand", "item"})


def expr_to_json(node: Expr | str | None) -> JSON:
    """``{"node": ClassName, field: value, ...}``; a bare string is a column."""
    if node is None:
        return None
    node = as_expr(node)
    out: dict[str, JSON] = {"node": type(node).__name__}
    for field in dataclasses.fields(node):  # type: ignore[arg-type]  # every node is a dataclass
        value = getattr(node, field.name)
        if field.name in _CHILDREN:
            out[field.name] = expr_to_json(value)
        elif field.name == "items":
            out[field.name] = [expr_to_json(v) for v in value]
        elif isinstance(value, tuple):
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out


def expr_from_json(data: JSON) -> Expr:
    if not isinstance(data, dict) or data.get("node") not in _NODES:
        raise DefinitionError(f"not an expression: {str(data)[:200]}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name == "node":
            continue
        if name in _CHILDREN:
            kwargs[name] = None if value is None else expr_from_json(value)
        elif name == "items":
            kwargs[name] = tuple(expr_from_json(v) for v in value)
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return _NODES[data["node"]](**kwargs)


def entity_to_json(entity: Entity) -> JSON:
    return {
        "name": entity.name,
        "join_keys": list(entity.join_keys),
        "key_type": entity.key_type,
        "description": entity.description,
    }


def entity_from_json(data: JSON) -> Entity:
    return Entity(
        name=data["name"],
        join_keys=tuple(data["join_keys"]),
        key_type=data["key_type"],
        description=data.get("description", ""),
    )


def source_to_json(source: Source) -> JSON:
    return dataclasses.asdict(source)


def source_from_json(data: JSON) -> Source:
    return Source(**data)


def feature_to_json(feature: Feature) -> JSON:
    if isinstance(feature, Derived):
        return {
            "kind": "derived",
            "name": feature.name,
            "op": feature.op,
            "inputs": list(feature.inputs),
            "data_type": feature.data_type,
            "description": feature.description,
        }
    source = feature.input_expr
    if isinstance(source, OneHot):
        value: JSON = {
            "one_hot": {
                "column": expr_to_json(source.column),
                "categories": list(source.categories),
            }
        }
    else:
        value = expr_to_json(source)
    return {
        "kind": "aggregation",
        "name": feature.name,
        "function": feature.function,
        "input": value,
        "window_ms": feature.window_ms,
        "hop_ms": feature.hop_ms,
        "filter": expr_to_json(feature.filter_expr),
        "data_type": feature.data_type,
        "description": feature.description,
    }


def feature_from_json(data: JSON) -> Feature:
    if data.get("kind") == "derived":
        return Derived(
            name=data["name"],
            op=data["op"],
            inputs=(data["inputs"][0], data["inputs"][1]),
            data_type=data.get("data_type"),
            description=data.get("description", ""),
        )
    raw = data.get("input")
    value: Expr | OneHot | None
    if isinstance(raw, dict) and "one_hot" in raw:
        one_hot = raw["one_hot"]
        value = OneHot(expr_from_json(one_hot["column"]), tuple(one_hot["categories"]))
    else:
        value = None if raw is None else expr_from_json(raw)
    return Aggregation(
        name=data["name"],
        function=data["function"],
        input=value,
        window=data["window_ms"],
        hop=data["hop_ms"],
        filter=None if data.get("filter") is None else expr_from_json(data["filter"]),
        data_type=data.get("data_type"),
        description=data.get("description", ""),
    )


def view_to_json(view: FeatureView) -> JSON:
    return {
        "name": view.name,
        "entity": entity_to_json(view.entity),
        "source": source_to_json(view.source),
        "features": [feature_to_json(f) for f in view.features],
        "ttl_ms": view.ttl_ms,
        "owner": view.owner,
        "tags": dict(sorted(view.tags.items())),
        "description": view.description,
    }


def view_from_json(data: JSON) -> FeatureView:
    return FeatureView(
        name=data["name"],
        entity=entity_from_json(data["entity"]),
        source=source_from_json(data["source"]),
        features=tuple(feature_from_json(f) for f in data["features"]),
        ttl=data["ttl_ms"] or None,  # 0: a view of derived features only
        owner=data.get("owner", ""),
        tags=data.get("tags", {}),
        description=data.get("description", ""),
    )
