"""The ``streamfs`` command: the composition root. Reads settings once, wires the pieces."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from streamfs.errors import StreamfsError
from streamfs.settings import Settings


def _services(args: argparse.Namespace, settings: Settings) -> int:
    from streamfs.services import ServicesManager
    from streamfs.services.kafka import fetch
    from streamfs.services.manager import format_exports, stderr_progress

    manager = ServicesManager(settings)
    if args.action == "up":
        addresses = manager.up()
        # stdout carries only `export` lines, so `eval "$(streamfs services up)"` works.
        sys.stdout.write(format_exports(addresses))
        stderr_progress(f"addresses written to {manager.env_file}")
    elif args.action == "down":
        stopped = manager.down()
        if not stopped:
            stderr_progress("nothing was running")
    elif args.action == "status":
        rows = manager.status()
        for row in rows:
            health = (
                "healthy"
                if row.healthy
                else ("down" if row.origin == "stopped" else "NOT ANSWERING")
            )
            pid = f" pid={row.pid}" if row.pid else ""
            log = f" log={row.log_file}" if row.log_file else ""
            print(f"{row.name:<16} {row.origin:<9} {health:<13} {row.address or '-'}{pid}{log}")
        return 0 if all(r.healthy for r in rows) else 1
    elif args.action == "fetch":
        print(fetch(settings.cache_dir, stderr_progress))
    elif args.action == "env":
        sys.stdout.write(format_exports(manager.published_addresses()))
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from streamfs import demo

    return demo.run(settings, args.duration, args.schemas, args.topology, args.rate, args.port)


def _native(args: argparse.Namespace, settings: Settings) -> int:
    from streamfs import native

    return native.run(args.action)


def resolve_settings(environ: dict[str, str] | os._Environ[str]) -> Settings:
    """Settings from the environment, with addresses of running managed services filled in."""
    from streamfs.services import ServicesManager

    settings = Settings.from_env(environ)
    published = ServicesManager(settings).published_addresses()
    missing = {k: v for k, v in published.items() if not environ.get(k)}
    return settings.with_addresses(missing)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamfs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    services = sub.add_parser("services", help="start, stop and inspect the local Kafka and Redis")
    services.add_argument(
        "action",
        choices=["up", "down", "status", "fetch", "env"],
        help="up: start what is missing and print export lines; down: stop what up started; "
        "status: show each service; fetch: download the Kafka jars only; env: print addresses",
    )
    services.set_defaults(handler=_services)

    demo = sub.add_parser(
        "demo", help="run the whole system locally: services, sample events, workers, web view"
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: Ctrl-C)",
    )
    demo.add_argument(
        "--schemas", type=Path, default=Path("avro_schemas"), help="the .avsc files to register"
    )
    demo.add_argument(
        "--topology", type=Path, default=Path("topology"), help="the definitions to apply"
    )
    demo.add_argument("--rate", type=float, default=50.0, help="purchase events per second")
    demo.add_argument("--port", type=int, default=8000, help="the web view's port")
    demo.set_defaults(handler=_demo)

    native = sub.add_parser(
        "native", help="compile the per-event modules with mypyc (used while they match)"
    )
    native.add_argument(
        "action",
        choices=["build", "status"],
        help="build: compile them unless the build is up to date; status: compiled, or why not",
    )
    native.set_defaults(handler=_native)

    from streamfs.schemas.registry import command as schema_registry_command

    schema_registry_command.add_parser(sub)

    from streamfs import produce_command
    from streamfs.schemas import register_command

    produce_command.add_parser(sub)
    register_command.add_parser(sub)

    from streamfs.registry import command as registry_command

    registry_command.add_parser(sub)

    from streamfs import worker_command

    worker_command.add_parser(sub)

    from streamfs.offline import command as offline_command

    offline_command.add_parser(sub)

    from streamfs.serving import command as serve_command

    serve_command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("services", "demo", "native"):
            # `services` decides for itself which configured addresses to use.
            settings = Settings.from_env(os.environ)
        else:
            settings = resolve_settings(os.environ)
        return int(args.handler(args, settings))
    except StreamfsError as exc:
        print(f"streamfs: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
