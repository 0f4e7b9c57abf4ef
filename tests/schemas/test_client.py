"""The registry clients: Confluent REST semantics, caching, errors, and both HTTP transports.

The REST calls run against the in-memory ``mock://`` registry; the transports run
against a small aiohttp app on 127.0.0.1 that records what it was sent.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from streamfs.schemas.client import (
    ACCEPT,
    CONTENT_TYPE,
    AsyncRegistryClient,
    RegisteredSchema,
    connect,
    connect_sync,
)
from streamfs.schemas.errors import (
    IncompatibleSchemaError,
    InvalidSchemaError,
    RegistryUnavailableError,
    SchemaNotFoundError,
    SchemaRegistryError,
    SubjectNotFoundError,
)
from streamfs.schemas.memory import MemoryRegistry

A = json.dumps({"type": "record", "name": "A", "fields": [{"name": "x", "type": "long"}]})
A2 = json.dumps(
    {
        "type": "record",
        "name": "A",
        "fields": [{"name": "x", "type": "long"}, {"name": "y", "type": "int", "default": 0}],
    }
)


@pytest.fixture
def mock_url() -> str:
    return f"mock://{uuid.uuid4().hex}"


@pytest.fixture
def registry(mock_url: str) -> AsyncRegistryClient:
    return connect(mock_url)


async def test_register_is_idempotent_and_ids_are_global(registry: AsyncRegistryClient) -> None:
    first = await registry.register("a-value", A)
    assert await registry.register("a-value", A) == first
    assert await registry.register("other-value", A) == first
    assert await registry.register("a-value", A2) == first + 1


async def test_latest_lookup_and_get_schema(registry: AsyncRegistryClient) -> None:
    id1 = await registry.register("a-value", A)
    id2 = await registry.register("a-value", A2)
    assert await registry.latest("a-value") == RegisteredSchema(id2, 2, A2)
    schema_id, version, schema = await registry.lookup("a-value", A)
    assert (schema_id, version, schema) == (id1, 1, A)
    assert await registry.get_schema(id1) == A


async def test_errors_carry_confluent_codes_and_name_the_subject_or_id(
    registry: AsyncRegistryClient,
) -> None:
    with pytest.raises(SchemaNotFoundError) as not_found:
        await registry.get_schema(404)
    assert (not_found.value.error_code, not_found.value.status) == (40403, 404)
    assert not_found.value.schema_id == 404
    assert "schema id 404" in str(not_found.value)

    with pytest.raises(SubjectNotFoundError) as no_subject:
        await registry.latest("nope-value")
    assert no_subject.value.error_code == 40401
    assert no_subject.value.subject == "nope-value"
    assert "'nope-value'" in str(no_subject.value)

    await registry.register("a-value", A)
    with pytest.raises(SchemaNotFoundError, match="'a-value'"):
        await registry.lookup("a-value", A2)
    with pytest.raises(InvalidSchemaError) as invalid:
        await registry.register("a-value", '{"type": "nonsense"}')
    assert invalid.value.error_code == 42201


async def test_get_schema_is_cached_and_concurrent_fetches_share_one_request(
    mock_url: str,
) -> None:
    schema_id = await connect(mock_url).register("a-value", A)
    client = connect(mock_url)
    store = MemoryRegistry.named(mock_url)
    before = store.requests
    got = await asyncio.gather(*(client.get_schema(schema_id) for _ in range(10)))
    assert got == [A] * 10
    assert await client.get_schema(schema_id) == A
    assert store.requests == before + 1


async def test_a_registry_that_is_down_is_unavailable_not_not_found(
    registry: AsyncRegistryClient, mock_url: str
) -> None:
    MemoryRegistry.named(mock_url).available = False
    with pytest.raises(RegistryUnavailableError) as caught:
        await registry.get_schema(1)
    assert caught.value.error_code == 50003
    assert caught.value.schema_id == 1


def test_sync_client_speaks_the_same(mock_url: str) -> None:
    with connect_sync(mock_url) as client:
        schema_id = client.register("a-value", A)
        assert client.get_schema(schema_id) == A
        assert client.latest("a-value") == (schema_id, 1, A)
        assert client.lookup("a-value", A).version == 1
        with pytest.raises(SubjectNotFoundError):
            client.latest("b-value")


# ---------------------------------------------------------------- HTTP transports


class FakeRegistry:
    """Answers like a Confluent registry and remembers the requests it got."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        payload = json.loads(body) if body else None
        self.seen.append((request.method, request.raw_path, dict(request.headers), payload))
        path = request.raw_path
        if payload == {"schema": "not compatible"}:
            return web.json_response(
                {"error_code": 409, "message": "Schema being registered is incompatible"},
                status=409,
            )
        if path.endswith("/schemas/ids/1"):
            return web.json_response({"schema": A}, content_type=CONTENT_TYPE)
        if request.method == "POST" and path.endswith("/versions"):
            return web.json_response({"id": 7}, content_type=CONTENT_TYPE)
        if path.endswith("/versions/latest"):
            return web.json_response({"subject": "x", "id": 7, "version": 3, "schema": A})
        if path.endswith("/schemas/ids/2"):
            return web.json_response({"error_code": 50001, "message": "store down"}, status=500)
        if path.endswith("/schemas/ids/3"):
            return web.Response(text="<html>proxy error</html>", status=502)
        return web.json_response({"error_code": 404, "message": "HTTP 404 Not Found"}, status=404)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeRegistry, str]]:
    fake = FakeRegistry()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield fake, f"http://user:s3cret@127.0.0.1:{server.port}/apis/ccompat/v7/"
    await server.close()


async def test_aiohttp_transport_sends_confluent_requests(fake: tuple[FakeRegistry, str]) -> None:
    registry, url = fake
    async with connect(url) as client:
        assert await client.register("orders/eu-value", A) == 7
        assert await client.get_schema(1) == A
        assert await client.latest("x") == (7, 3, A)
    method, path, headers, body = registry.seen[0]
    assert (method, path) == ("POST", "/apis/ccompat/v7/subjects/orders%2Feu-value/versions")
    assert body == {"schema": A}
    assert headers["Content-Type"] == CONTENT_TYPE
    assert headers["Accept"] == ACCEPT
    assert headers["Authorization"] == "Basic dXNlcjpzM2NyZXQ="  # user:s3cret


async def test_aiohttp_transport_maps_error_answers(fake: tuple[FakeRegistry, str]) -> None:
    _, url = fake
    async with connect(url) as client:
        with pytest.raises(IncompatibleSchemaError) as incompatible:
            await client.register("y-value", "not compatible")
        assert "'y-value'" in str(incompatible.value)
        with pytest.raises(RegistryUnavailableError, match="store down") as down:
            await client.get_schema(2)
        assert down.value.error_code == 50001
        with pytest.raises(RegistryUnavailableError, match="proxy error"):
            await client.get_schema(3)


async def test_urllib_transport_speaks_the_same(fake: tuple[FakeRegistry, str]) -> None:
    registry, url = fake

    def use_sync_client() -> tuple[int, str]:
        with connect_sync(url) as client:
            with pytest.raises(SchemaRegistryError) as caught:
                client.register("y-value", "not compatible")
            assert caught.value.error_code == 409
            return client.register("orders/eu-value", A), client.get_schema(1)

    assert await asyncio.to_thread(use_sync_client) == (7, A)
    assert registry.seen[1][1] == "/apis/ccompat/v7/subjects/orders%2Feu-value/versions"
    assert registry.seen[1][2]["Authorization"] == "Basic dXNlcjpzM2NyZXQ="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_nobody_listening_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with connect(url, timeout_s=2) as client:
        with pytest.raises(RegistryUnavailableError, match="schema id 5") as caught:
            await client.get_schema(5)
    assert caught.value.schema_id == 5
    with pytest.raises(RegistryUnavailableError):
        await asyncio.to_thread(connect_sync(url, timeout_s=2).get_schema, 5)
