"""Schema registry clients for any registry that speaks the Confluent REST API.

Confluent's Schema Registry, Karapace, Apicurio (its ``/apis/ccompat/v7`` base URL),
Redpanda and streamfs's own registry all answer the same five calls used here.

The HTTP exchange is written once, without I/O: :class:`RegistryApi` turns an
operation into a :class:`Request` and an answer into a value or a
:class:`~streamfs.schemas.errors.SchemaRegistryError`, and keeps the caches. Two thin
clients drive it, :class:`AsyncRegistryClient` (the worker, over aiohttp) and
:class:`SyncRegistryClient` (CLI tools, over urllib), each over a transport that
only moves bytes. A ``mock://name`` URL selects an in-memory registry
(:mod:`streamfs.schemas.memory`) behind the same clients, for unit tests.

Caching: a schema id names one schema forever, so ``get_schema`` answers from
memory after the first fetch, as do ``register`` and ``lookup`` for a
(subject, schema) pair already seen; ``latest`` always asks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, NamedTuple, Protocol, Self, TypeVar
from urllib.parse import quote

from streamfs.schemas.errors import (
    ERRORS_BY_CODE,
    RegistryUnavailableError,
    SchemaRegistryError,
)

T = TypeVar("T")
E = TypeVar("E", bound=SchemaRegistryError)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPT = ", ".join((CONTENT_TYPE, "application/vnd.schemaregistry+json", "application/json"))
# error_code of an answer that never came (connection refused, timeout).
NO_ANSWER = 0


class RegisteredSchema(NamedTuple):
    """A schema as registered under a subject: ``(schema_id, version, schema)``."""

    schema_id: int
    version: int
    schema: str


class SchemaRegistry(Protocol):
    """What streamfs asks of a schema registry, asynchronously (the worker's view)."""

    async def register(self, subject: str, schema: str) -> int: ...
    async def get_schema(self, schema_id: int) -> str: ...
    async def latest(self, subject: str) -> RegisteredSchema: ...
    async def lookup(self, subject: str, schema: str) -> RegisteredSchema: ...
    async def close(self) -> None: ...


class SyncSchemaRegistry(Protocol):
    """The same calls, blocking (CLI tools, scripts, benchmarks)."""

    def register(self, subject: str, schema: str) -> int: ...
    def get_schema(self, schema_id: int) -> str: ...
    def latest(self, subject: str) -> RegisteredSchema: ...
    def lookup(self, subject: str, schema: str) -> RegisteredSchema: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # below the base URL, path segments already quoted
    body: dict[str, Any] | None = None


class Response(NamedTuple):
    status: int
    payload: Any  # parsed JSON, or the raw text when the body is not JSON


class AsyncTransport(Protocol):
    async def send(self, request: Request) -> Response: ...
    async def close(self) -> None: ...


class SyncTransport(Protocol):
    def send(self, request: Request) -> Response: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request to send and how to read its answer."""

    request: Request
    parse: Callable[[Any], T]
    what: str  # "get schema id 7": starts every error message
    subject: str | None = None
    schema_id: int | None = None

    def finish(self, response: Response) -> T:
        status, payload = response
        if 200 <= status < 300:
            try:
                return self.parse(payload)
            except (KeyError, TypeError, ValueError) as exc:
                raise self._error(
                    SchemaRegistryError, f"unexpected answer {payload!r}", 0, status
                ) from exc
        code, message = _error_fields(status, payload)
        cls = RegistryUnavailableError if status >= 500 else ERRORS_BY_CODE.get(code)
        raise self._error(cls or SchemaRegistryError, message, code, status)

    def unavailable(self, exc: RegistryUnavailableError) -> RegistryUnavailableError:
        """The transport's error, told which subject or id it was about."""
        return self._error(RegistryUnavailableError, str(exc), exc.error_code, exc.status)

    def _error(self, cls: type[E], message: str, code: int, status: int) -> E:
        return cls(
            f"{self.what}: {message} (error_code {code}, HTTP {status})",
            error_code=code,
            status=status,
            subject=self.subject,
            schema_id=self.schema_id,
        )


def _error_fields(status: int, payload: Any) -> tuple[int, str]:
    if isinstance(payload, dict):
        code = payload.get("error_code")
        message = payload.get("message")
        return (
            code if isinstance(code, int) else status,
            message if isinstance(message, str) else json.dumps(payload),
        )
    return status, str(payload) if payload else "no message"


def _segment(value: str) -> str:
    return quote(value, safe="")


class RegistryApi:
    """The Confluent REST calls and the caches, without I/O (shared by both clients)."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._lookups: dict[tuple[str, str], RegisteredSchema] = {}

    def register(self, subject: str, schema: str) -> int | Call[int]:
        key = (subject, schema)
        if (cached := self._ids.get(key)) is not None:
            return cached

        def parse(payload: Any) -> int:
            schema_id = int(payload["id"])
            self._ids[key] = schema_id
            self.schemas.setdefault(schema_id, schema)
            return schema_id

        request = Request("POST", f"/subjects/{_segment(subject)}/versions", {"schema": schema})
        return Call(request, parse, f"register schema under subject {subject!r}", subject=subject)

    def get_schema(self, schema_id: int) -> str | Call[str]:
        if (cached := self.schemas.get(schema_id)) is not None:
            return cached

        def parse(payload: Any) -> str:
            schema = payload["schema"]
            if not isinstance(schema, str):
                raise TypeError("schema is not a string")
            self.schemas[schema_id] = schema
            return schema

        request = Request("GET", f"/schemas/ids/{schema_id}")
        return Call(request, parse, f"get schema id {schema_id}", schema_id=schema_id)

    def latest(self, subject: str) -> Call[RegisteredSchema]:
        request = Request("GET", f"/subjects/{_segment(subject)}/versions/latest")
        return Call(request, self._registered, f"latest of subject {subject!r}", subject=subject)

    def lookup(self, subject: str, schema: str) -> RegisteredSchema | Call[RegisteredSchema]:
        key = (subject, schema)
        if (cached := self._lookups.get(key)) is not None:
            return cached

        def parse(payload: Any) -> RegisteredSchema:
            found = self._registered(payload)
            self._lookups[key] = found
            return found

        request = Request("POST", f"/subjects/{_segment(subject)}", {"schema": schema})
        return Call(request, parse, f"look up schema in subject {subject!r}", subject=subject)

    def _registered(self, payload: Any) -> RegisteredSchema:
        found = RegisteredSchema(int(payload["id"]), int(payload["version"]), payload["schema"])
        if not isinstance(found.schema, str):
            raise TypeError("schema is not a string")
        self.schemas.setdefault(found.schema_id, found.schema)
        return found


class AsyncRegistryClient:
    """A :class:`SchemaRegistry` over an async transport.

    Concurrent ``get_schema`` calls for one id share a single request.
    """

    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport
        self._api = RegistryApi()
        self._fetching: dict[int, asyncio.Future[str]] = {}

    async def register(self, subject: str, schema: str) -> int:
        return await self._run(self._api.register(subject, schema))

    async def get_schema(self, schema_id: int) -> str:
        step = self._api.get_schema(schema_id)
        if not isinstance(step, Call):
            return step
        pending = self._fetching.get(schema_id)
        if pending is None:
            pending = asyncio.ensure_future(self._send(step))
            self._fetching[schema_id] = pending
            pending.add_done_callback(lambda _: self._fetching.pop(schema_id, None))
        return await asyncio.shield(pending)

    async def latest(self, subject: str) -> RegisteredSchema:
        return await self._send(self._api.latest(subject))

    async def lookup(self, subject: str, schema: str) -> RegisteredSchema:
        return await self._run(self._api.lookup(subject, schema))

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self, step: T | Call[T]) -> T:
        return await self._send(step) if isinstance(step, Call) else step

    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._transport.send(call.request)
        except RegistryUnavailableError as exc:
            raise call.unavailable(exc) from exc
        return call.finish(response)


class SyncRegistryClient:
    """A :class:`SyncSchemaRegistry` over a blocking transport."""

    def __init__(self, transport: SyncTransport) -> None:
        self._transport = transport
        self._api = RegistryApi()

    def register(self, subject: str, schema: str) -> int:
        return self._run(self._api.register(subject, schema))

    def get_schema(self, schema_id: int) -> str:
        return self._run(self._api.get_schema(schema_id))

    def latest(self, subject: str) -> RegisteredSchema:
        return self._send(self._api.latest(subject))

    def lookup(self, subject: str, schema: str) -> RegisteredSchema:
        return self._run(self._api.lookup(subject, schema))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, step: T | Call[T]) -> T:
        return self._send(step) if isinstance(step, Call) else step

    def _send(self, call: Call[T]) -> T:
        try:
            response = self._transport.send(call.request)
        except RegistryUnavailableError as exc:
            raise call.unavailable(exc) from exc
        return call.finish(response)


MOCK_SCHEME = "mock://"


def connect(url: str, *, timeout_s: float = 10.0) -> AsyncRegistryClient:
    """An async client for ``http(s)://host:port[/base]`` or the in-memory ``mock://name``.

    Credentials in the URL (``http://user:secret@host``) are sent as HTTP basic auth.
    """
    if url.startswith(MOCK_SCHEME):
        from streamfs.schemas.memory import AsyncMemoryTransport, MemoryRegistry

        return AsyncRegistryClient(AsyncMemoryTransport(MemoryRegistry.named(url)))
    from streamfs.schemas.transport import AiohttpTransport

    return AsyncRegistryClient(AiohttpTransport(url, timeout_s=timeout_s))


def connect_sync(url: str, *, timeout_s: float = 10.0) -> SyncRegistryClient:
    """A blocking client for the same URLs as :func:`connect`."""
    if url.startswith(MOCK_SCHEME):
        from streamfs.schemas.memory import MemoryRegistry, SyncMemoryTransport

        return SyncRegistryClient(SyncMemoryTransport(MemoryRegistry.named(url)))
    from streamfs.schemas.transport import UrllibTransport

    return SyncRegistryClient(UrllibTransport(url, timeout_s=timeout_s))
