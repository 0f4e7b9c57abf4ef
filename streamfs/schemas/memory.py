"""An in-memory schema registry for unit tests, reached by a ``mock://name`` URL.

It answers the client's REST requests in-process, with the status codes and
``{"error_code", "message"}`` bodies of Confluent's registry, so the clients'
request building, answer parsing and caching run unchanged in unit tests. Like
confluent-kafka's mock client it does not check compatibility; streamfs's own
registry (:mod:`streamfs.schemas.registry`) does.

Every client of one URL shares one registry for the life of the process, so a test
should use a name of its own (``mock://`` plus a unique token).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, ClassVar
from urllib.parse import unquote

import fastavro

from streamfs.schemas.client import Request, Response

_ROUTES = [
    ("POST", re.compile(r"/subjects/(?P<subject>[^/]+)/versions"), "register"),
    ("GET", re.compile(r"/schemas/ids/(?P<schema_id>\d+)"), "get_schema"),
    ("GET", re.compile(r"/subjects/(?P<subject>[^/]+)/versions/(?P<version>latest|\d+)"), "get"),
    ("POST", re.compile(r"/subjects/(?P<subject>[^/]+)"), "lookup"),
    ("GET", re.compile(r"/subjects"), "list_subjects"),
]


def _error(status: int, code: int, message: str) -> Response:
    return Response(status, {"error_code": code, "message": message})


def _canonical(schema: str) -> str:
    """The identity of a schema: its JSON with whitespace and key order normalized."""
    return json.dumps(json.loads(schema), sort_keys=True, separators=(",", ":"))


class MemoryRegistry:
    """Subjects, versions and globally numbered schema ids, held in a dict."""

    _named: ClassVar[dict[str, MemoryRegistry]] = {}
    _named_lock: ClassVar = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._schemas: list[str] = []  # id - 1 -> schema text as first registered
        self._ids: dict[str, int] = {}  # canonical form -> id
        self._subjects: dict[str, list[int]] = {}  # subject -> ids, index = version - 1
        self.available = True  # False: answer 503, as a registry that is down
        self.requests = 0  # how many requests were answered; tests check the caching

    @classmethod
    def named(cls, url: str) -> MemoryRegistry:
        """The registry behind ``url``, created on first use."""
        with cls._named_lock:
            return cls._named.setdefault(url, cls())

    def handle(self, request: Request) -> Response:
        self.requests += 1
        if not self.available:
            return _error(503, 50003, "registry unavailable (mock)")
        for method, pattern, name in _ROUTES:
            match = pattern.fullmatch(request.path)
            if match is not None and method == request.method:
                args = {k: unquote(v) for k, v in match.groupdict().items()}
                with self._lock:
                    answer: Response = getattr(self, "_" + name)(request.body, **args)
                    return answer
        return _error(404, 404, f"no route {request.method} {request.path}")

    def _register(self, body: Any, subject: str) -> Response:
        schema = body.get("schema") if isinstance(body, dict) else None
        if not isinstance(schema, str):
            return _error(422, 42201, "body has no schema string")
        try:
            fastavro.parse_schema(json.loads(schema))
            canonical = _canonical(schema)
        except Exception as exc:  # fastavro raises several unrelated types
            return _error(422, 42201, f"invalid Avro schema: {exc}")
        schema_id = self._ids.get(canonical)
        if schema_id is None:
            self._schemas.append(schema)
            schema_id = self._ids[canonical] = len(self._schemas)
        versions = self._subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return Response(200, {"id": schema_id})

    def _get_schema(self, body: Any, schema_id: str) -> Response:
        index = int(schema_id) - 1
        if not 0 <= index < len(self._schemas):
            return _error(404, 40403, f"schema {schema_id} not found")
        return Response(200, {"schema": self._schemas[index]})

    def _get(self, body: Any, subject: str, version: str) -> Response:
        versions = self._subjects.get(subject)
        if not versions:
            return _error(404, 40401, f"subject {subject!r} not found")
        number = len(versions) if version == "latest" else int(version)
        if not 1 <= number <= len(versions):
            return _error(404, 40402, f"version {version} of subject {subject!r} not found")
        return Response(200, self._registered(subject, number))

    def _lookup(self, body: Any, subject: str) -> Response:
        versions = self._subjects.get(subject)
        if not versions:
            return _error(404, 40401, f"subject {subject!r} not found")
        schema = body.get("schema") if isinstance(body, dict) else None
        try:
            schema_id = self._ids.get(_canonical(schema)) if isinstance(schema, str) else None
        except ValueError:
            schema_id = None
        if schema_id not in versions:
            return _error(404, 40403, f"schema not found under subject {subject!r}")
        return Response(200, self._registered(subject, versions.index(schema_id) + 1))

    def _list_subjects(self, body: Any) -> Response:
        return Response(200, sorted(self._subjects))

    def _registered(self, subject: str, version: int) -> dict[str, Any]:
        schema_id = self._subjects[subject][version - 1]
        return {
            "subject": subject,
            "version": version,
            "id": schema_id,
            "schema": self._schemas[schema_id - 1],
        }


class SyncMemoryTransport:
    def __init__(self, registry: MemoryRegistry) -> None:
        self.registry = registry

    def send(self, request: Request) -> Response:
        return self.registry.handle(request)

    def close(self) -> None:
        """Nothing to release."""


class AsyncMemoryTransport:
    def __init__(self, registry: MemoryRegistry) -> None:
        self.registry = registry

    async def send(self, request: Request) -> Response:
        return self.registry.handle(request)

    async def close(self) -> None:
        """Nothing to release."""
