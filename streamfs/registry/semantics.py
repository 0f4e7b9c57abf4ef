"""What a definition means, as opposed to how it is described; and what changed between two.

Two versions *mean* the same when their aggregations would compute the same values
from the same events: the same function, input, window, hop and filter, over the
same topic, key and event-time field, for the same entity key. Descriptions, owners,
tags, TTLs, declared types, lateness and derived features don't change that (derived
features are computed when read, from stored aggregates).
"""

from __future__ import annotations

import json
from typing import Any

JSON = Any
_AGGREGATION_KEYS = ("function", "hop_ms", "input", "name", "window_ms", "filter")
_SOURCE_KEYS = ("topic", "key_field", "event_time_field")
_ENTITY_KEYS = ("join_keys", "key_type", "name")


def _pick(data: JSON, keys: tuple[str, ...]) -> JSON:
    return {k: data.get(k) for k in keys}


def source_key(view: JSON) -> JSON:
    return {
        "source": _pick(view["source"], _SOURCE_KEYS),
        "entity": _pick(view["entity"], _ENTITY_KEYS),
    }


def feature_key(feature: JSON, view: JSON) -> JSON:
    """What a feature means within ``view`` (a derived feature: its op and inputs)."""
    if feature.get("kind") == "derived":
        return {"op": feature["op"], "inputs": feature["inputs"]}
    return {**_pick(feature, _AGGREGATION_KEYS), **source_key(view)}


def view_state_key(view: JSON) -> JSON:
    """What a view's stored state means: its aggregations over its source and entity."""
    aggregations = [
        _pick(f, _AGGREGATION_KEYS) for f in view["features"] if f.get("kind") != "derived"
    ]
    return {"aggregations": aggregations, **source_key(view)}


def _show(value: JSON) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _keyed(items: list[JSON]) -> dict[str, JSON] | None:
    if all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return {i["name"]: i for i in items}
    return None


def diff(old: JSON, new: JSON, path: str = "") -> list[str]:
    """What changed from ``old`` to ``new``, one ``path: before -> after`` line per field.

    Lists of named objects (features) are compared by name: ``features[x] added``.
    """
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        lines: list[str] = []
        for key in sorted(old.keys() | new.keys()):
            sub = f"{path}.{key}" if path else key
            if key not in old:
                lines.append(f"{sub}: added {_show(new[key])}")
            elif key not in new:
                lines.append(f"{sub}: removed")
            else:
                lines.extend(diff(old[key], new[key], sub))
        return lines
    if isinstance(old, list) and isinstance(new, list):
        before, after = _keyed(old), _keyed(new)
        if before is not None and after is not None:
            lines = []
            for name in [*before, *(n for n in after if n not in before)]:
                sub = f"{path}[{name}]"
                if name not in after:
                    lines.append(f"{sub}: removed")
                elif name not in before:
                    lines.append(f"{sub}: added")
                else:
                    lines.extend(diff(before[name], after[name], sub))
            if not lines and list(before) != list(after):
                lines.append(f"{path}: reordered")
            return lines
    return [f"{path}: {_show(old)} -> {_show(new)}"]
