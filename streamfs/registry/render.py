"""Plain-text views of plans and features, for the CLI (pure string building)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from streamfs.registry.plan import Plan
from streamfs.registry.state import FeatureInfo
from streamfs.store import FeatureDetails

_MARK = {"create": "+", "change": "~", "remove": "-", "retire": "x"}


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def plan_lines(plan: Plan) -> list[str]:
    """One line per step (with its changes indented), then the count left unchanged."""
    lines: list[str] = []
    for step in plan.steps:
        label = (
            f"{_MARK[step.action]} {step.action} {step.kind} {step.name} (version {step.version})"
        )
        if step.new_state:
            label += ": a new meaning, computed afresh; earlier versions stay served until retired"
        lines.append(label)
        if step.action == "change":
            lines.extend(f"    {change}" for change in step.changes)
    if plan.unchanged:
        lines.append(f"= {len(plan.unchanged)} unchanged")
    return lines


def summary(plan: Plan) -> str:
    if plan.empty:
        return "No changes: the registry already holds this topology."
    counts = {a: sum(s.action == a for s in plan.steps) for a in ("create", "change", "remove")}
    return (
        f"{counts['create']} to create, {counts['change']} to change,"
        f" {counts['remove']} to remove, {len(plan.unchanged)} unchanged."
    )


def feature_table(features: list[FeatureInfo]) -> list[str]:
    rows = [("NAME", "TYPE", "VERSION", "VIEW", "DESCRIPTION")]
    rows += [
        (f.name, f.data_type, str(f.version), f"{f.view}@{f.view_version}", f.description)
        for f in features
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in rows
    ]


def feature_details(details: FeatureDetails) -> list[str]:
    info, lineage = details.info, details.lineage
    lines = [
        f"{info.name}  ({info.kind}, {info.data_type}, version {info.version})",
        f"  description: {info.description or '-'}",
        f"  view: {info.view} (version {info.view_version},"
        f" {'registered from SQL' if info.origin == 'sql' else 'applied from a topology'})",
    ]
    if info.sql:
        lines.append(f"  sql: {info.sql}")
    lines.append("  definition:")
    lines += [
        "    " + line for line in json.dumps(info.spec, indent=2, sort_keys=True).splitlines()
    ]
    lines.append("  versions:")
    for v in details.versions:
        served = "served" if v.served else "retired"
        lines.append(
            f"    v{v.version}: view {v.view}@{v.view_version}, state {v.state_version},"
            f" by {v.who} at {when(v.when_ms)} [{served}]"
        )
    lines += [
        "  lineage:",
        f"    source: topic {lineage.topic!r}, schema subject {lineage.schema_subject!r}"
        f" (source {lineage.source!r})",
        f"    -> feature view {lineage.view!r} (entity {lineage.entity!r})",
        f"    -> feature {lineage.feature!r}",
    ]
    if lineage.inputs:
        lines.append(f"    inputs: {', '.join(lineage.inputs)}")
    if lineage.upstream and lineage.upstream != lineage.inputs:
        lines.append(f"    upstream: {', '.join(lineage.upstream)}")
    if lineage.downstream:
        lines.append(f"    used by: {', '.join(lineage.downstream)}")
    return lines
