"""``streamfs serve``: the HTTP API and web view on one port.

    streamfs serve --port 8080            # http://127.0.0.1:8080/ and /v1/...

Reads the registry named by the settings (``STREAMFS_REGISTRY_TOPIC``) every
``--refresh`` seconds, features from ``STREAMFS_REDIS_URL`` under
``STREAMFS_NAMESPACE``, and produces pushed events to Kafka through the schema
registry. One process, one event loop; run several behind a balancer to scale.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from typing import Any

from streamfs.errors import ConfigError
from streamfs.serving import VALUE_CACHE_ENTRIES
from streamfs.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve features over HTTP (JSON API, push ingestion, web view)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument(
        "--refresh", type=float, default=5.0, help="seconds between registry reloads"
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (costs throughput)"
    )
    parser.add_argument(
        "--value-cache",
        type=int,
        default=VALUE_CACHE_ENTRIES,
        metavar="N",
        help="(view, entity) values kept computed between reads, exact at any read time"
        " (default %(default)s, about 2 KB each; 0: decode every read)",
    )
    parser.set_defaults(handler=run)
    return parser


async def _freeze_heap(app: Any) -> None:
    """Move everything alive after startup out of the collector's sight (``gc.freeze``).

    The process holds a few hundred thousand long-lived objects (modules, the registry,
    Kafka and Redis clients); a full collection walked them all, a pause of tens of
    milliseconds that landed on some request: it was most of the server's p99. Frozen
    objects are still freed by reference counting; only cycles among them would stay.
    """
    gc.collect()
    gc.freeze()
    # A thread running Python (the registry reload) holds the GIL for up to the switch
    # interval, 5 ms by default, each time the event loop wants it back: a request
    # arriving then waits that long. 0.5 ms bounds that wait at a negligible cost.
    sys.setswitchinterval(0.0005)


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it installs (not on Windows): ~8% more requests a second from one
    process in bench/online, and a lower CPU cost a request; asyncio's loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from streamfs.serving.app import Server, ServerOptions, build_app
    from streamfs.store import FeatureStore

    if not settings.redis_url:
        raise ConfigError("serve needs Redis: set STREAMFS_REDIS_URL or run `streamfs services up`")
    if args.refresh <= 0:
        raise ConfigError(f"--refresh must be > 0 seconds, got {args.refresh}")
    store = FeatureStore(settings)
    if args.value_cache < 0:
        raise ConfigError(f"--value-cache must be >= 0 entries, got {args.value_cache}")
    options = ServerOptions(refresh_s=args.refresh, value_cache_entries=args.value_cache)
    server = Server(settings, options, store.registry_state)
    app = build_app(server)
    app.on_startup.append(_freeze_heap)  # after the server's own startup (connections, catalog)
    web.run_app(
        app,
        loop=_event_loop(),
        host=args.host,
        port=args.port,
        access_log=logging.getLogger("aiohttp.access") if args.access_log else None,
        print=lambda message: print(message, flush=True),
    )
    return 0
