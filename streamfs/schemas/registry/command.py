"""``streamfs schema-registry``: run the Kafka-backed Confluent-compatible schema registry."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

from streamfs.errors import ConfigError
from streamfs.schemas.registry.names import DEFAULT_TOPIC
from streamfs.settings import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081  # Confluent's


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Add the ``schema-registry`` subcommand; its handler is :func:`run`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "schema-registry",
        help="serve the Confluent Schema Registry REST API (Avro), stored in a Kafka topic",
        description=__doc__,
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    parser.add_argument(
        "--kafka-bootstrap",
        default=None,
        help="Kafka bootstrap servers (default: STREAMFS_KAFKA_BOOTSTRAP or the managed Kafka)",
    )
    parser.add_argument(
        "--topic",
        default=DEFAULT_TOPIC,
        help="compacted topic that stores the schemas (created if missing)",
    )
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until SIGINT or SIGTERM, then stop cleanly (close the writer, leave no open
    transaction behind)."""
    bootstrap = args.kafka_bootstrap or settings.kafka_bootstrap
    if not bootstrap:
        raise ConfigError(
            "no Kafka to store schemas in: pass --kafka-bootstrap, set "
            "STREAMFS_KAFKA_BOOTSTRAP, or run `streamfs services up`"
        )
    asyncio.run(_serve_until_signalled(args.host, args.port, bootstrap, args.topic))
    return 0


async def _serve_until_signalled(host: str, port: int, bootstrap: str, topic: str) -> None:
    from streamfs.schemas.registry.server import serve

    task = asyncio.ensure_future(serve(host, port, bootstrap, topic))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
