"""``streamfs produce``: stream sample events, or the rows of a checked file, into a topic.

    streamfs produce --kind purchase --rate 50            # 50 purchases/s until Ctrl-C
    streamfs produce --kind page_view --count 10000 --rate 0 --seed 7
    streamfs produce --kind purchase --from-file orders.csv [--skip-bad]

Values are Avro in the Confluent wire format, with the schema of the kind
(``<schemas>/<kind>.avsc``) registered under ``<topic>-value``; keys are the entity id
(``user_id``). The same ``--seed`` and ``--entities`` give the same events, except
event times, which are the wall clock at sending.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamfs.errors import ConfigError
from streamfs.schemas.sample import KINDS, SCHEMA_FILES, Kind
from streamfs.settings import Settings

if TYPE_CHECKING:  # the command's modules load when it runs, not when the CLI parses
    from streamfs.producer import Acks

KEY_FIELD = "user_id"  # the entity key of every sample kind
PROGRESS_EVERY_S = 5.0


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Add the ``produce`` subcommand; its handler is :func:`run`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "produce",
        help="stream sample events (or a JSON Lines, CSV or Parquet file) into a Kafka topic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kind", choices=KINDS, default="purchase", help="which events")
    parser.add_argument("--topic", default=None, help="target topic (default: the kind's name)")
    parser.add_argument(
        "--rate", type=float, default=10.0, help="events per second; 0 = as fast as possible"
    )
    parser.add_argument("--count", type=int, default=0, help="how many events; 0 = until Ctrl-C")
    parser.add_argument("--entities", type=int, default=1_000, help="how many distinct users")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same events")
    parser.add_argument(
        "--from-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="send the rows of a .jsonl/.csv/.parquet file instead of sample events; every row"
        " is checked first and nothing is sent if any is bad (see --skip-bad)",
    )
    parser.add_argument(
        "--skip-bad", action="store_true", help="with --from-file: send the good rows anyway"
    )
    parser.add_argument(
        "--schemas", type=Path, default=Path("avro_schemas"), help="directory of the .avsc files"
    )
    parser.add_argument(
        "--schema-registry-url",
        default=None,
        help="default: STREAMFS_SCHEMA_REGISTRY_URL or the managed registry",
    )
    parser.add_argument(
        "--kafka-bootstrap",
        default=None,
        help="default: STREAMFS_KAFKA_BOOTSTRAP or the managed Kafka",
    )
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace, settings: Settings) -> int:
    from streamfs.producer import Acks, check_file, sample_records

    bootstrap = args.kafka_bootstrap or settings.kafka_bootstrap
    registry_url = args.schema_registry_url or settings.schema_registry_url
    if not bootstrap or not registry_url:
        raise ConfigError(
            "produce needs Kafka and a schema registry: pass --kafka-bootstrap and"
            " --schema-registry-url, set STREAMFS_KAFKA_BOOTSTRAP and"
            " STREAMFS_SCHEMA_REGISTRY_URL, or run `streamfs services up`"
        )
    kind: Kind = args.kind
    topic: str = args.topic or kind
    schema_file = args.schemas / SCHEMA_FILES[kind]
    try:
        schema = schema_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the {kind} schema {schema_file}: {exc}") from exc
    if args.count < 0 or args.entities < 1:
        raise ConfigError("--count must be >= 0 and --entities >= 1")

    records: Iterable[dict[str, Any]]
    if args.from_file is not None:
        checked = check_file(args.from_file, schema)
        if checked.ignored_columns:
            _say(f"columns not in the {kind} schema, ignored: {', '.join(checked.ignored_columns)}")
        for problem in checked.problems:
            _say(str(problem))
        if checked.problems and not args.skip_bad:
            _say(
                f"nothing sent: {len(checked.problems)} bad row(s) in {args.from_file}"
                f" ({len(checked.records)} good); fix them, or pass --skip-bad to send the good"
                " rows only"
            )
            return 1
        if checked.problems:
            _say(f"skipping {len(checked.problems)} bad row(s), sending {len(checked.records)}")
        records = checked.records
    else:
        records = sample_records(
            kind,
            seed=args.seed,
            entities=args.entities,
            count=args.count,
            clock=lambda: time.time_ns() // 1_000_000,
        )
    acks = Acks()
    sent, stopped = asyncio.run(
        _until_signalled(
            _produce(bootstrap, registry_url, topic, schema, records, args.rate, acks), acks
        )
    )
    print(f"sent {sent} {kind} events to {topic}" + (" (stopped by signal)" if stopped else ""))
    return 0


async def _until_signalled(work: Coroutine[Any, Any, int], acks: Acks) -> tuple[int, bool]:
    """Run ``work``; SIGINT or SIGTERM cancel it, and it reports what was acknowledged."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await task, False
    except asyncio.CancelledError:
        return acks.count, True
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _produce(
    bootstrap: str,
    registry_url: str,
    topic: str,
    schema: str,
    records: Iterable[dict[str, Any]],
    rate: float,
    acks: Acks,
) -> int:
    from aiokafka import AIOKafkaProducer

    from streamfs.producer import Pacer, paced, send
    from streamfs.schemas.client import connect
    from streamfs.schemas.codec import Encoder, value_subject

    async with connect(registry_url) as registry:
        encoder = await Encoder.registered(registry, value_subject(topic), schema)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=10
    )
    await producer.start()
    reporter = asyncio.create_task(_report(acks))
    try:
        return await send(
            producer, topic, encoder, KEY_FIELD, paced(records, Pacer(rate)), acks=acks
        )
    finally:
        reporter.cancel()
        await producer.stop()  # flushes what is still in flight


async def _report(acks: Acks) -> None:
    """A progress line every few seconds, for long or endless runs."""
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        _say(f"sent {acks.count}")


def _say(message: str) -> None:
    print(f"produce: {message}", file=sys.stderr, flush=True)
