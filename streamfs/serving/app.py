"""The aiohttp application: the shared runtime (:class:`Server`), middleware, routes.

One :class:`Server` per application holds the connections (``redis.asyncio`` with
hiredis, a lazily started Kafka producer for pushes), the registry snapshot
(:class:`~streamfs.serving.catalog.Catalog`, reloaded every ``refresh_s`` on a
thread so the loop never blocks on Kafka) and the metrics. Handlers live in
:mod:`.api` (JSON) and :mod:`.web` (HTML, server-sent events).

Every error becomes JSON ``{"error", "detail"}`` in :func:`errors_middleware`: a
streamfs error by :func:`~streamfs.serving.errors.error_status`, aiohttp's own
(404 route, 405, 413 body too large) with their status, and a lost connection to
Redis or Kafka as 503. Nothing a client sends should produce a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from streamfs.errors import StreamfsError
from streamfs.online import ValueCache
from streamfs.push import Pusher
from streamfs.registry.state import RegistryState
from streamfs.serving import VALUE_CACHE_ENTRIES
from streamfs.serving.catalog import Catalog
from streamfs.serving.errors import error_status
from streamfs.serving.metrics import ServerMetrics
from streamfs.serving.redisreads import AsyncClientReads, RedisReads
from streamfs.settings import Settings

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 1 << 20


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class ServerOptions:
    refresh_s: float = 5.0  # how often the registry snapshot is reloaded
    max_body_bytes: int = MAX_BODY_BYTES
    max_entities: int = 1_000  # per online read
    stream_interval_s: float = 0.5  # how often a live entity view re-reads Redis
    value_cache_entries: int = VALUE_CACHE_ENTRIES  # (view, entity) values kept computed


class Server:
    """The state every request shares (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        options: ServerOptions,
        load_registry: Callable[[], RegistryState],
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.settings, self.options, self.clock = settings, options, clock
        self._load_registry = load_registry
        self.catalog = Catalog.empty()
        self.metrics = ServerMetrics()
        self.value_cache = ValueCache(options.value_cache_entries)  # see ValueCache
        self.pusher = Pusher(settings.kafka_bootstrap, settings.schema_registry_url, clock)
        self.redis: Any = None  # redis.asyncio.Redis (typed loosely: redis's stubs are partial)
        self.reads: RedisReads | AsyncClientReads | None = None  # the online reads' HGETs
        self.topic_stats: Any = None  # streamfs.serving.freshness.TopicStats
        self._tasks: list[asyncio.Task[None]] = []
        self._registry_end: int | None = None  # the registry topic's end offset last seen

    async def start(self) -> None:
        import redis.asyncio

        url = self.settings.redis_url
        if url:
            self.redis = redis.asyncio.Redis.from_url(url)
            supported = RedisReads.supports(url)
            self.reads = RedisReads(url) if supported else AsyncClientReads(self.redis)
        from streamfs.serving.freshness import TopicStats

        self.topic_stats = TopicStats(self.settings.kafka_bootstrap, self.clock)
        # The registry topic's end offset before the first load, so the first periodic
        # check does not reload an unchanged registry (that reload, seconds into serving,
        # was the slowest 1% of requests in a 10 s benchmark phase).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._registry_moved(), 5.0)
        await self.refresh()
        self._tasks.append(asyncio.create_task(self._refresh_forever()))
        self._tasks.append(asyncio.create_task(self._topic_stats_forever()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.pusher.close()
        if self.topic_stats is not None:
            await self.topic_stats.close()
        if self.reads is not None:
            await self.reads.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def refresh(self) -> None:
        """Reload the registry snapshot (keeps the old one if the registry cannot be read).

        Both the load and the compiling of views run on a thread: milliseconds of work
        every ``refresh_s`` that would otherwise stall every request waiting behind it.
        """
        try:
            state = await asyncio.to_thread(self._load_registry)
        except StreamfsError as exc:
            log.warning("registry_refresh_failed", error=str(exc))
            return
        self.catalog = await asyncio.to_thread(Catalog.of, state, self.clock(), self.catalog)
        self.metrics.registry_loaded.set(self.catalog.loaded_at_ms)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.refresh_s)
            if await self._registry_moved():
                await self.refresh()

    async def _registry_moved(self) -> bool:
        """Whether the registry topic grew since the last look (``True`` when that cannot be
        told). Loading the registry reads the whole topic with a new consumer, 60-80 ms of
        a thread's work and thousands of objects for the collector; asking for its end
        offset is one request. Every registry change is a new record, so an unchanged end
        offset means an unchanged registry; a record landing during a load moves it again."""
        if self.topic_stats is None or not self.settings.kafka_bootstrap:
            return True
        topic = self.settings.registry_topic
        try:
            end: int = (await self.topic_stats.end_offsets([topic]))[topic]
        except Exception as exc:  # best effort: reload as if it moved
            log.warning("registry_offsets_failed", error=repr(exc))
            return True
        moved, self._registry_end = end != self._registry_end, end
        return moved

    async def _topic_stats_forever(self) -> None:
        while True:
            try:
                await self.topic_stats.sample(self.catalog.sources.values(), self.metrics)
            except Exception as exc:  # stats are best effort; the API must keep answering
                log.warning("topic_stats_failed", error=repr(exc))
            await asyncio.sleep(self.options.refresh_s)


SERVER = web.AppKey("server", Server)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, error: str, detail: Any) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


def _error(exc: Exception, request: web.Request) -> web.Response | None:
    """The JSON error response for ``exc``, or ``None`` if it is a bug (a 500)."""
    if isinstance(exc, web.HTTPException):
        reason = exc.reason.lower().replace(" ", "_")
        return error_response(exc.status, reason, exc.text or exc.reason)
    if isinstance(exc, StreamfsError):
        return error_response(*error_status(exc))
    if isinstance(exc, ConnectionError | OSError | TimeoutError):
        log.warning("backend_unavailable", path=request.path, error=repr(exc))
        return error_response(503, "unavailable", repr(exc))
    import redis.exceptions

    if isinstance(exc, redis.exceptions.RedisError):
        return error_response(503, "redis_unavailable", repr(exc))
    from aiokafka.errors import KafkaError

    if isinstance(exc, KafkaError):
        return error_response(503, "kafka_unavailable", repr(exc))
    return None


@web.middleware
async def server_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as JSON (see the module docstring) and every request counted and timed.

    One middleware, not two: each one costs a coroutine and a call per request.
    """
    start = time.perf_counter()
    try:
        response = await handler(request)
    except Exception as exc:
        if isinstance(exc, web.HTTPException) and exc.status < 400:
            _observe(request, exc.status, start)
            raise
        error = _error(exc, request)
        if error is None:
            _observe(request, 500, start)
            raise
        response = error
    _observe(request, response.status, start)
    return response


def _observe(request: web.Request, status: int, start: float) -> None:
    info = request.match_info.route.resource
    route = info.canonical if info is not None else "unmatched"
    request.app[SERVER].metrics.observe(route, request.method, status, time.perf_counter() - start)


def build_app(server: Server) -> web.Application:
    """The application over ``server``; starting it connects, stopping it closes."""
    from streamfs.serving import api
    from streamfs.serving import web as pages

    app = web.Application(
        middlewares=[server_middleware],
        client_max_size=server.options.max_body_bytes,
    )
    app[SERVER] = server
    api.add_routes(app)
    pages.add_routes(app)

    async def lifecycle(app: web.Application) -> Any:
        await server.start()
        yield
        await server.stop()

    app.cleanup_ctx.append(lifecycle)
    return app
