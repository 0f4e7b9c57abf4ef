"""``streamfs apply`` and ``streamfs features``: the registry from the command line.

``apply PATH`` loads a topology directory, prints the plan (what it will create,
change and remove) and applies it in one transaction; ``--dry-run`` stops after
the plan. Applying the same topology again prints "No changes". ``features
list`` and ``features show NAME`` read the registry; ``features retire VIEW
VERSION`` stops serving an old version.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from streamfs.errors import ConfigError
from streamfs.registry import render
from streamfs.settings import Settings
from streamfs.store import FeatureStore


def _registry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry-topic",
        default=None,
        help="the registry's Kafka topic (default: STREAMFS_REGISTRY_TOPIC, else"
        " _streamfs-registry-v1)",
    )
    parser.add_argument(
        "--kafka-bootstrap",
        default=None,
        help="Kafka bootstrap servers (default: STREAMFS_KAFKA_BOOTSTRAP or the managed Kafka)",
    )


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``apply`` and ``features`` subcommands."""
    apply: argparse.ArgumentParser = subparsers.add_parser(
        "apply",
        help="register a topology's entities, sources and feature views (prints the plan first)",
        description=__doc__,
    )
    apply.add_argument("path", type=Path, help="a directory of definitions, e.g. topology/")
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    _registry_options(apply)
    apply.set_defaults(handler=run_apply)

    features: argparse.ArgumentParser = subparsers.add_parser(
        "features", help="list and inspect registered features", description=__doc__
    )
    actions = features.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every registered feature")
    _registry_options(listing)
    show = actions.add_parser("show", help="a feature's definition, versions and lineage")
    show.add_argument("name")
    _registry_options(show)
    retire = actions.add_parser("retire", help="stop serving an old version of a feature view")
    retire.add_argument("view")
    retire.add_argument("version", type=int)
    _registry_options(retire)
    features.set_defaults(handler=run_features)


def _store(args: argparse.Namespace, settings: Settings) -> FeatureStore:
    overrides: dict[str, Any] = {}
    if args.registry_topic:
        overrides["registry_topic"] = args.registry_topic
    if args.kafka_bootstrap:
        overrides["kafka_bootstrap"] = args.kafka_bootstrap
    settings = dataclasses.replace(settings, **overrides)
    if not settings.kafka_bootstrap:
        raise ConfigError(
            "no Kafka for the registry: pass --kafka-bootstrap, set STREAMFS_KAFKA_BOOTSTRAP,"
            " or run `streamfs services up`"
        )
    return FeatureStore(settings)


def run_apply(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(args, settings)
    from streamfs.registry.topology import load_topology

    topology = load_topology(args.path)
    planned = store.apply(topology, dry_run=True)
    print(f"Plan for {args.path} (registry topic {store.settings.registry_topic}):")
    for line in render.plan_lines(planned):
        print(f"  {line}")
    print(render.summary(planned))
    if args.dry_run or planned.empty:
        return 0
    applied = store.apply(topology)
    if applied.steps != planned.steps:
        # Another writer changed the registry in between: say what was really done.
        print("The registry changed meanwhile; applied instead:")
        for line in render.plan_lines(applied):
            print(f"  {line}")
    print(f"Applied: {len(applied.records)} record(s) written.")
    return 0


def run_features(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(args, settings)
    if args.action == "list":
        features = store.list_features()
        if not features:
            print("No features registered.")
            return 0
        for line in render.feature_table(features):
            print(line.rstrip())
    elif args.action == "show":
        for line in render.feature_details(store.get_feature(args.name)):
            print(line)
    elif args.action == "retire":
        plan = store.retire(args.view, args.version)
        print(f"retired {args.view} version {args.version}" if plan.records else "already retired")
    return 0
