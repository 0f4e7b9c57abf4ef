"""A lean asyncio Redis connection for the server's hot path: pipelined ``HGET``s, nothing else.

Why not ``redis.asyncio`` here: one ``HGET`` through it costs about 80 µs of Python
(connection pool, retry wrapper, per-command timeouts and locks), more than
everything else a read does together. This connection is an
:class:`asyncio.Protocol`: the commands of every read issued in one turn of the event
loop leave in one ``write``, replies are parsed by hiredis (which ``redis[hiredis]``
already installs) and paired with their reads by Redis's ordering, one future per
read. About 12 µs a command with 16 reads in flight, against 55 for ``redis.asyncio``.

It only reads. The server keeps its ``redis.asyncio`` client for everything else
(readiness checks, the web view's streams). A lost connection fails the reads in
flight with :class:`ConnectionError` (the API answers 503) and the next read
connects again. ``redis://`` and ``unix://`` URLs, with a password, user and db,
are supported; for others (TLS) :meth:`RedisReads.supports` is false and the server
reads through ``redis.asyncio`` (:class:`AsyncClientReads`).

:class:`BlockingRedisReads` is the same reader for the SDK's synchronous calls: a plain
socket per thread, one ``sendall`` and hiredis for the replies. About 60 µs a
single-key read here against 115 for ``redis.Redis.hget`` (p99 130 against 280).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import hiredis
import redis.exceptions
from redis.connection import UnixDomainSocketConnection, parse_url
from redis.exceptions import ResponseError


def _options(url: str) -> dict[str, Any]:
    """redis-py's reading of a Redis URL (host, port, db, password, socket path, TLS)."""
    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]  # redis-py: untyped
    return options


def pack(*args: str | bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a Redis URL points (a Unix socket, or a host and port) and what a new
    connection sends first: ``AUTH`` and ``SELECT`` as the URL asks."""

    unix: str | None
    host: str
    port: int
    setup: tuple[bytes, ...]

    @classmethod
    def of(cls, url: str) -> Endpoint:
        options = _options(url)
        setup = []
        if options.get("password") is not None:
            user = options.get("username")
            auth = ("AUTH", user, options["password"]) if user else ("AUTH", options["password"])
            setup.append(pack(*auth))
        if int(options.get("db", 0)):
            setup.append(pack("SELECT", str(options["db"])))
        return cls(
            str(options["path"]) if options.get("connection_class") else None,
            str(options.get("host", "localhost")),
            int(options.get("port", 6379)),
            tuple(setup),
        )


def hget_payload(keys: Sequence[str], field: str) -> bytes:
    """``HGET key field`` for each key, as one pipelined write."""
    tail = b"$%d\r\n%s\r\n" % (len(field), field.encode())
    return b"".join(
        b"*3\r\n$4\r\nHGET\r\n$%d\r\n%s\r\n%s" % (len(k), k, tail)
        for k in (key.encode() for key in keys)
    )


def _raise_reply_errors(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))


class _Protocol(asyncio.Protocol):
    """Pairs replies with requests in order: each waiter is ``(reply count, future)``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.waiters: deque[tuple[int, asyncio.Future[list[Any]]]] = deque()
        self.replies: list[Any] = []  # of the request at the head of ``waiters``
        self.lost: ConnectionError | None = None
        self.outgoing: list[bytes] = []  # written together at the end of this loop turn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A write transport, though not an asyncio.Transport subclass under uvloop.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                self.replies.append(reply)
                count, future = self.waiters[0]
                if len(self.replies) == count:
                    self.waiters.popleft()
                    replies, self.replies = self.replies, []
                    if not future.done():  # a cancelled read still takes its replies
                        future.set_result(replies)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked
            self.lost = ConnectionError(f"Redis sent what this reader cannot pair: {exc!r}")
            assert self.transport is not None
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = ConnectionError(f"connection to Redis lost: {exc!r}")
        while self.waiters:
            _, future = self.waiters.popleft()
            if not future.done():
                future.set_exception(self.lost)

    def request(self, payload: bytes, count: int) -> asyncio.Future[list[Any]]:
        """Send ``payload`` (``count`` commands); the future gets their ``count`` replies.

        Requests made in one turn of the event loop leave in one ``write`` at its end:
        under load a send costs more than the commands it carries, so concurrent reads
        share one (at concurrency 1 it is the same single write, one callback later).
        """
        if self.lost is not None:
            raise self.lost
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self.waiters.append((count, future))
        if not self.outgoing:
            loop.call_soon(self._flush)
        self.outgoing.append(payload)
        return future

    def _flush(self) -> None:
        outgoing, self.outgoing = self.outgoing, []
        if self.lost is None and self.transport is not None:
            self.transport.write(b"".join(outgoing))


class RedisReads:
    """Pipelined ``HGET`` of one field from many keys over one shared connection."""

    def __init__(self, url: str, connect_timeout_s: float = 5.0) -> None:
        self._endpoint = Endpoint.of(url)
        self._connect_timeout_s = connect_timeout_s
        self._protocol: _Protocol | None = None
        self._lock: asyncio.Lock | None = None

    @staticmethod
    def supports(url: str) -> bool:
        """Whether this reader can talk to ``url`` (plain TCP or a Unix socket)."""
        cls = _options(url).get("connection_class")
        return cls is None or cls is UnixDomainSocketConnection

    async def hget(self, keys: Sequence[str], field: str) -> list[bytes | None]:
        """``HGET key field`` for each key, in order, in one round trip."""
        if not keys:
            return []
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        replies = await protocol.request(hget_payload(keys, field), len(keys))
        _raise_reply_errors(replies)
        return replies

    async def _connect(self) -> _Protocol:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._protocol is not None and self._protocol.lost is None:
                return self._protocol
            loop = asyncio.get_running_loop()
            endpoint = self._endpoint
            if endpoint.unix is not None:
                connecting = loop.create_unix_connection(_Protocol, endpoint.unix)
            else:
                connecting = loop.create_connection(_Protocol, endpoint.host, endpoint.port)
            try:
                _, protocol = await asyncio.wait_for(connecting, self._connect_timeout_s)
            except TimeoutError as exc:
                raise ConnectionError(f"Redis did not accept a connection: {exc!r}") from exc
            for command in endpoint.setup:
                (reply,) = await protocol.request(command, 1)
                if isinstance(reply, hiredis.ReplyError):
                    protocol.transport.close()  # type: ignore[union-attr]
                    raise ResponseError(str(reply))
            self._protocol = protocol
            return protocol

    async def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


class AsyncClientReads:
    """The same ``hget`` over a ``redis.asyncio`` client, for URLs :class:`RedisReads` does
    not speak (TLS)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def hget(self, keys: Sequence[str], field: str) -> list[bytes | None]:
        if len(keys) == 1:
            return [await self._client.hget(keys[0], field)]
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, field)
        return list(await pipe.execute())

    async def close(self) -> None:
        """The client is the server's; it closes it."""


class _Connection:
    """One blocking socket to Redis and its reply parser; used by one thread only."""

    __slots__ = ("pid", "reader", "sock", "used")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.reader = sock, hiredis.Reader()
        self.pid = os.getpid()
        self.used = False  # whether a request went through (a stale one may be retried)

    def request(self, payload: bytes, count: int) -> list[Any]:
        self.sock.sendall(payload)
        replies: list[Any] = []
        reader = self.reader
        while True:
            while (reply := reader.gets()) is not False:
                replies.append(reply)
                if len(replies) == count:
                    self.used = True
                    return replies
            data = self.sock.recv(65_536)
            if not data:
                raise ConnectionResetError("Redis closed the connection")
            reader.feed(data)

    def close(self) -> None:
        if self.pid == os.getpid():  # a forked child leaves its parent's socket alone
            self.sock.close()


class BlockingRedisReads:
    """:class:`RedisReads` for synchronous callers (the SDK): pipelined ``HGET`` of one
    field from many keys, one connection per thread (``threading.local``), a new one
    after a fork. Errors are redis-py's, as from ``redis.Redis``: a refused or lost
    connection raises :class:`redis.exceptions.ConnectionError`, a timeout
    :class:`redis.exceptions.TimeoutError`, a Redis error :class:`ResponseError`. A read
    that fails on a connection which served reads before is sent once more on a new one
    (Redis restarted or closed an idle client in between); reads change nothing, so
    repeating one is safe."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self._endpoint = Endpoint.of(url)
        self._timeout_s = timeout_s
        self._local = threading.local()

    supports = staticmethod(RedisReads.supports)

    def hget_many(self, keys: Sequence[str], field: str) -> list[bytes | None]:
        """``HGET key field`` for each key, in order, in one round trip. (Not ``hget``:
        :func:`~streamfs.online.read_online` tells this reader from a ``redis.Redis``
        by the name.)"""
        if not keys:
            return []
        payload = hget_payload(keys, field)
        connection = self._connection()
        try:
            replies = self._request(connection, payload, len(keys))
        except redis.exceptions.ConnectionError:
            if not connection.used:
                raise
            replies = self._request(self._connection(), payload, len(keys))
        _raise_reply_errors(replies)
        return replies

    def _request(self, connection: _Connection, payload: bytes, count: int) -> list[Any]:
        try:
            return connection.request(payload, count)
        except (OSError, hiredis.ProtocolError) as exc:
            self._drop(connection)  # mid-reply: the stream can no longer be paired
            if isinstance(exc, TimeoutError):
                raise redis.exceptions.TimeoutError(
                    f"Redis did not answer within {self._timeout_s} s"
                ) from exc
            raise redis.exceptions.ConnectionError(f"reading from Redis failed: {exc!r}") from exc

    def _connection(self) -> _Connection:
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is not None and connection.pid == os.getpid():
            return connection
        endpoint = self._endpoint
        where = endpoint.unix or f"{endpoint.host}:{endpoint.port}"
        try:
            if endpoint.unix is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self._timeout_s)
                try:
                    sock.connect(endpoint.unix)
                except OSError:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((endpoint.host, endpoint.port), self._timeout_s)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise redis.exceptions.ConnectionError(
                f"cannot connect to Redis at {where}: {exc!r}"
            ) from exc
        connection = _Connection(sock)
        for command in endpoint.setup:
            (reply,) = self._request(connection, command, 1)
            if isinstance(reply, hiredis.ReplyError):
                connection.close()
                raise ResponseError(str(reply))
        connection.used = False
        self._local.connection = connection
        return connection

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None

    def close(self) -> None:
        """Close this thread's connection (the next read opens another)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            self._drop(connection)
