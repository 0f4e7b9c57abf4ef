"""``streamfs schemas register DIR``: register every ``DIR/*.avsc`` as ``<file stem>-value``.

Idempotent: a schema already registered under its subject is reported ``unchanged``
with its id and version; only new or changed schemas are registered (a changed
one as a new version, if the subject's compatibility rule allows it).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streamfs.errors import ConfigError
from streamfs.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Add ``schemas`` with its ``register`` action; the handler is :func:`run`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "schemas", help="manage the Avro schemas in the schema registry", description=__doc__
    )
    actions = parser.add_subparsers(dest="action", required=True)
    register = actions.add_parser(
        "register", help="register every .avsc in DIR under <file stem>-value", description=__doc__
    )
    register.add_argument("dir", type=Path, metavar="DIR", help="directory of .avsc files")
    register.add_argument(
        "--schema-registry-url",
        default=None,
        help="default: STREAMFS_SCHEMA_REGISTRY_URL or the managed registry",
    )
    register.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace, settings: Settings) -> int:
    from streamfs.schemas.client import connect_sync
    from streamfs.schemas.codec import value_subject
    from streamfs.schemas.errors import (
        SchemaNotFoundError,
        SchemaRegistryError,
        SubjectNotFoundError,
    )

    url = args.schema_registry_url or settings.schema_registry_url
    if not url:
        raise ConfigError(
            "no schema registry: pass --schema-registry-url, set STREAMFS_SCHEMA_REGISTRY_URL,"
            " or run `streamfs services up`"
        )
    files = sorted(Path(args.dir).glob("*.avsc"))
    if not files:
        raise ConfigError(f"no .avsc files in {args.dir}")
    failed = 0
    with connect_sync(url) as registry:
        for path in files:
            subject = value_subject(path.stem)
            schema = path.read_text(encoding="utf-8")
            try:
                try:
                    found = registry.lookup(subject, schema)
                    status = "unchanged"
                except (SubjectNotFoundError, SchemaNotFoundError):
                    registry.register(subject, schema)
                    found = registry.lookup(subject, schema)
                    status = "registered"
            except SchemaRegistryError as exc:
                print(f"{path}: {subject}: error: {exc}")
                failed += 1
                continue
            print(f"{subject}\tid {found.schema_id}\tversion {found.version}\t{status}")
    return 1 if failed else 0
