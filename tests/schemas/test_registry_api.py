"""The registry's HTTP API over the in-memory store: Confluent's shapes, codes and rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streamfs.schemas.registry.server import MEDIA_TYPE, create_app
from streamfs.schemas.registry.store import MemoryStore

Client = TestClient[web.Request, web.Application]


def record(name: str = "Event", **fields: str | dict[str, Any]) -> str:
    """An Avro record schema; a field given as a dict is used as the whole field."""
    body = [
        spec if isinstance(spec, dict) else {"name": field, "type": spec}
        for field, spec in fields.items()
    ]
    return json.dumps({"type": "record", "name": name, "namespace": "test", "fields": body})


V1 = record(a="int")
V2_WITH_DEFAULT = record(a="int", b={"name": "b", "type": "int", "default": 0})
V2_NO_DEFAULT = record(a="int", b="int")


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(MemoryStore()))) as test_client:
        yield test_client


@pytest.fixture
def call(client: Client) -> Callable[..., Any]:
    async def request(
        method: str, path: str, body: Any = None, content_type: str = MEDIA_TYPE
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        response = await client.request(method, path, data=data, headers=headers)
        assert response.headers["Content-Type"].startswith(MEDIA_TYPE)
        return response.status, await response.json(content_type=None)

    return request


async def register(call: Callable[..., Any], subject: str, schema: str) -> int:
    status, body = await call("POST", f"/subjects/{subject}/versions", {"schema": schema})
    assert status == 200, body
    return int(body["id"])


async def test_root_and_schema_types(call: Callable[..., Any]) -> None:
    assert await call("GET", "/") == (200, {})
    assert await call("GET", "/schemas/types") == (200, ["AVRO"])


async def test_register_is_idempotent_and_ids_are_global(call: Callable[..., Any]) -> None:
    first = await register(call, "a-value", V1)
    assert await register(call, "a-value", V1) == first
    # Same canonical form (whitespace, key order, doc) -> same id, same version.
    reordered = json.dumps(
        {
            "fields": [{"type": "int", "name": "a", "doc": "x"}],
            "namespace": "test",
            "name": "Event",
            "type": "record",
        },
        indent=2,
    )
    assert await register(call, "a-value", reordered) == first
    assert await call("GET", "/subjects/a-value/versions") == (200, [1])
    # The same schema under another subject reuses the id, and keeps the first text.
    assert await register(call, "b-value", reordered) == first
    status, body = await call("GET", "/subjects/b-value/versions/latest")
    assert (status, body["schema"]) == (200, V1)
    second = await register(call, "a-value", V2_WITH_DEFAULT)
    assert second == first + 1
    assert await call("GET", "/subjects") == (200, ["a-value", "b-value"])
    assert await call("GET", "/subjects/a-value/versions") == (200, [1, 2])


async def test_identity_is_the_parsing_canonical_form(call: Callable[..., Any]) -> None:
    # The canonical form leaves out defaults: the wire encoding is the same, so is the id.
    assert await register(call, "s", V2_WITH_DEFAULT) == await register(call, "s", V2_NO_DEFAULT)
    assert await call("GET", "/subjects/s/versions") == (200, [1])


async def test_get_versions_and_schemas_by_id(call: Callable[..., Any]) -> None:
    one = await register(call, "s", V1)
    two = await register(call, "s", V2_WITH_DEFAULT)
    await register(call, "other", V1)
    expected = {"subject": "s", "version": 2, "id": two, "schema": V2_WITH_DEFAULT}
    assert await call("GET", "/subjects/s/versions/latest") == (200, expected)
    assert await call("GET", "/subjects/s/versions/-1") == (200, expected)
    assert await call("GET", "/subjects/s/versions/2") == (200, expected)
    assert await call("GET", "/subjects/s/versions/1/schema") == (200, json.loads(V1))
    assert await call("GET", f"/schemas/ids/{one}") == (200, {"schema": V1})
    assert await call("GET", f"/schemas/ids/{one}/schema") == (200, json.loads(V1))
    assert await call("GET", f"/schemas/ids/{one}/subjects") == (200, ["other", "s"])
    assert await call("GET", f"/schemas/ids/{one}/versions") == (
        200,
        [{"subject": "other", "version": 1}, {"subject": "s", "version": 1}],
    )


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/subjects/nope/versions", 404, 40401),
        ("/subjects/nope/versions/1", 404, 40401),
        ("/subjects/s/versions/7", 404, 40402),
        ("/subjects/s/versions/0", 422, 42202),
        ("/subjects/s/versions/one", 422, 42202),
        ("/schemas/ids/99", 404, 40403),
        ("/schemas/ids/99/subjects", 404, 40403),
        ("/no/such/route", 404, 404),
    ],
)
async def test_not_found_and_invalid(
    call: Callable[..., Any], path: str, status: int, code: int
) -> None:
    await register(call, "s", V1)
    got_status, body = await call("GET", path)
    assert (got_status, body["error_code"]) == (status, code)
    assert body["message"]


async def test_lookup_under_subject(call: Callable[..., Any]) -> None:
    schema_id = await register(call, "s", V1)
    assert await call("POST", "/subjects/s", {"schema": V1}) == (
        200,
        {"subject": "s", "version": 1, "id": schema_id, "schema": V1},
    )
    status, body = await call("POST", "/subjects/s", {"schema": V2_WITH_DEFAULT})
    assert (status, body["error_code"]) == (404, 40403)
    status, body = await call("POST", "/subjects/nope", {"schema": V1})
    assert (status, body["error_code"]) == (404, 40401)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"schema": '{"type": "record", "name": "X", "fields": [{"name": "a"}]}'}, 422, 42201),
        ({"schema": "not json"}, 422, 42201),
        ({"schema": ""}, 422, 42201),
        ({"schema": V1, "schemaType": "PROTOBUF"}, 422, 42201),
        ({"schema": V1, "references": [{"name": "x", "subject": "y", "version": 1}]}, 422, 42201),
    ],
)
async def test_invalid_schemas(
    call: Callable[..., Any], body: dict[str, Any], status: int, code: int
) -> None:
    got_status, got = await call("POST", "/subjects/s/versions", body)
    assert (got_status, got["error_code"]) == (status, code)


async def test_subjects_with_url_encoded_characters(client: Client) -> None:
    from yarl import URL

    for encoded in ("a%2Fb", "x%20y", "%3A.ctx%3Asub"):
        response = await client.post(
            URL(f"/subjects/{encoded}/versions", encoded=True), json={"schema": '"string"'}
        )
        assert response.status == 200
    response = await client.get(URL("/subjects/a%2Fb/versions", encoded=True))
    assert await response.json(content_type=None) == [1]
    response = await client.get("/subjects")
    assert await response.json(content_type=None) == [":.ctx:sub", "a/b", "x y"]


async def test_explicit_avro_type_and_primitive_schemas(call: Callable[..., Any]) -> None:
    status, body = await call("POST", "/subjects/s/versions", {"schema": V1, "schemaType": "AVRO"})
    assert status == 200
    assert await register(call, "key", '"string"') == body["id"] + 1


@pytest.mark.parametrize(
    "content_type",
    [
        MEDIA_TYPE,
        "application/vnd.schemaregistry+json",
        "application/json",
        "application/octet-stream",
    ],
)
async def test_accepted_content_types(call: Callable[..., Any], content_type: str) -> None:
    status, body = await call(
        "POST", "/subjects/s/versions", {"schema": V1}, content_type=content_type
    )
    assert (status, body) == (200, {"id": 1})


async def test_rejected_bodies(client: Client) -> None:
    response = await client.post(
        "/subjects/s/versions", data="schema=x", headers={"Content-Type": "text/plain"}
    )
    assert response.status == 415
    assert (await response.json(content_type=None))["error_code"] == 415
    response = await client.post(
        "/subjects/s/versions", data="{nope", headers={"Content-Type": MEDIA_TYPE}
    )
    assert response.status == 400


async def test_soft_and_permanent_delete_of_a_version(call: Callable[..., Any]) -> None:
    await register(call, "s", V1)
    await register(call, "s", V2_WITH_DEFAULT)
    status, body = await call("DELETE", "/subjects/s/versions/1?permanent=true")
    assert (status, body["error_code"]) == (404, 40407)
    assert await call("DELETE", "/subjects/s/versions/1") == (200, 1)
    status, body = await call("DELETE", "/subjects/s/versions/1")
    assert (status, body["error_code"]) == (404, 40406)
    assert await call("GET", "/subjects/s/versions") == (200, [2])
    assert await call("GET", "/subjects/s/versions?deleted=true") == (200, [1, 2])
    status, body = await call("GET", "/subjects/s/versions/1")
    assert (status, body["error_code"]) == (404, 40402)
    status, body = await call("GET", "/subjects/s/versions/1?deleted=true")
    assert (status, body["version"]) == (200, 1)
    assert await call("DELETE", "/subjects/s/versions/1?permanent=true") == (200, 1)
    assert await call("GET", "/subjects/s/versions?deleted=true") == (200, [2])
    assert await call("GET", "/schemas/ids/1") == (
        404,
        {"error_code": 40403, "message": "Schema 1 not found"},
    )


async def test_soft_and_permanent_delete_of_a_subject(call: Callable[..., Any]) -> None:
    first = await register(call, "s", V1)
    await register(call, "s", V2_WITH_DEFAULT)
    status, body = await call("DELETE", "/subjects/s?permanent=true")
    assert (status, body["error_code"]) == (404, 40405)
    assert await call("DELETE", "/subjects/s") == (200, [1, 2])
    status, body = await call("DELETE", "/subjects/s")
    assert (status, body["error_code"]) == (404, 40404)
    assert await call("GET", "/subjects") == (200, [])
    assert await call("GET", "/subjects?deleted=true") == (200, ["s"])
    status, body = await call("GET", "/subjects/s/versions")
    assert (status, body["error_code"]) == (404, 40401)
    # A soft-deleted schema keeps its id; registering it again makes a new version.
    assert await call("GET", f"/schemas/ids/{first}") == (200, {"schema": V1})
    assert await register(call, "s", V1) == first
    assert await call("GET", "/subjects/s/versions") == (200, [3])
    assert await call("DELETE", "/subjects/s") == (200, [3])
    assert await call("DELETE", "/subjects/s?permanent=true") == (200, [1, 2, 3])
    assert await call("GET", "/subjects?deleted=true") == (200, [])
    # Ids are never reused, even after their schemas are erased.
    assert await register(call, "s", record("Fresh", x="string")) == first + 2


async def test_config_global_and_per_subject(call: Callable[..., Any]) -> None:
    assert await call("GET", "/config") == (200, {"compatibilityLevel": "BACKWARD"})
    assert await call("PUT", "/config", {"compatibility": "full"}) == (
        200,
        {"compatibility": "FULL"},
    )
    assert await call("GET", "/config") == (200, {"compatibilityLevel": "FULL"})
    status, body = await call("PUT", "/config", {"compatibility": "SIDEWAYS"})
    assert (status, body["error_code"]) == (422, 42203)
    status, body = await call("GET", "/config/s")
    assert (status, body["error_code"]) == (404, 40408)
    assert await call("GET", "/config/s?defaultToGlobal=true") == (
        200,
        {"compatibilityLevel": "FULL"},
    )
    assert await call("PUT", "/config/s", {"compatibility": "NONE"}) == (
        200,
        {"compatibility": "NONE"},
    )
    assert await call("GET", "/config/s") == (200, {"compatibilityLevel": "NONE"})
    assert await call("DELETE", "/config/s") == (200, {"compatibilityLevel": "NONE"})
    status, body = await call("DELETE", "/config/s")
    assert (status, body["error_code"]) == (404, 40401)


async def test_backward_rejects_a_field_without_default(call: Callable[..., Any]) -> None:
    await register(call, "s", V1)
    status, body = await call(
        "POST", "/compatibility/subjects/s/versions/latest", {"schema": V2_NO_DEFAULT}
    )
    assert (status, body) == (200, {"is_compatible": False})
    status, body = await call(
        "POST", "/compatibility/subjects/s/versions/latest?verbose=true", {"schema": V2_NO_DEFAULT}
    )
    assert body["is_compatible"] is False
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in body["messages"][0]
    status, body = await call("POST", "/subjects/s/versions", {"schema": V2_NO_DEFAULT})
    assert (status, body["error_code"]) == (409, 409)
    assert await call(
        "POST", "/compatibility/subjects/s/versions/1", {"schema": V2_WITH_DEFAULT}
    ) == (200, {"is_compatible": True})
    await register(call, "s", V2_WITH_DEFAULT)


async def test_forward_and_none(call: Callable[..., Any]) -> None:
    # Dropping a field the old reader needs (no default there) breaks FORWARD only.
    await register(call, "s", V2_NO_DEFAULT)
    await call("PUT", "/config/s", {"compatibility": "FORWARD"})
    status, body = await call("POST", "/subjects/s/versions", {"schema": V1})
    assert (status, body["error_code"]) == (409, 409)
    await call("PUT", "/config/s", {"compatibility": "BACKWARD"})
    await register(call, "s", V1)
    await call("PUT", "/config/s", {"compatibility": "NONE"})
    await register(call, "s", record(a="string"))
    assert await call("GET", "/subjects/s/versions") == (200, [1, 2, 3])


async def test_full_needs_both_directions(call: Callable[..., Any]) -> None:
    await call("PUT", "/config", {"compatibility": "FULL"})
    await register(call, "s", V1)
    status, _ = await call("POST", "/subjects/s/versions", {"schema": V2_NO_DEFAULT})
    assert status == 409
    await register(call, "s", V2_WITH_DEFAULT)


@pytest.mark.parametrize(
    ("level", "accepted"), [("BACKWARD", True), ("BACKWARD_TRANSITIVE", False)]
)
async def test_transitive_checks_every_live_version(
    call: Callable[..., Any], level: str, accepted: bool
) -> None:
    await call("PUT", "/config/s", {"compatibility": level})
    await register(call, "s", V1)
    await register(call, "s", V2_WITH_DEFAULT)
    # v3 reads v2's data (b is there) but not v1's (b missing, no default).
    v3 = record(a="int", b="int", c={"name": "c", "type": "int", "default": 0})
    status, _ = await call("POST", "/subjects/s/versions", {"schema": v3})
    assert (status == 200) is accepted
    if not accepted:
        status, body = await call("POST", "/compatibility/subjects/s/versions", {"schema": v3})
        assert body == {"is_compatible": False}
        # With v1 soft-deleted, only v2 counts.
        await call("DELETE", "/subjects/s/versions/1")
        await register(call, "s", v3)


async def test_compatibility_of_unknown_subject(call: Callable[..., Any]) -> None:
    status, body = await call(
        "POST", "/compatibility/subjects/nope/versions/latest", {"schema": V1}
    )
    assert (status, body["error_code"]) == (404, 40401)
    assert await call("POST", "/compatibility/subjects/nope/versions", {"schema": V1}) == (
        200,
        {"is_compatible": True},
    )


def test_command_line() -> None:
    import argparse

    from streamfs.errors import ConfigError
    from streamfs.schemas.registry.command import add_parser, run
    from streamfs.settings import Settings

    parser = argparse.ArgumentParser(prog="streamfs")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["schema-registry"])
    assert (args.host, args.port, args.kafka_bootstrap, args.topic) == (
        "127.0.0.1",
        8081,
        None,
        "_schemas",
    )
    assert args.handler is run
    args = parser.parse_args(
        ["schema-registry", "--port", "9", "--topic", "t", "--kafka-bootstrap", "k:9092"]
    )
    assert (args.port, args.topic, args.kafka_bootstrap) == (9, "t", "k:9092")
    with pytest.raises(ConfigError, match="--kafka-bootstrap"):
        run(parser.parse_args(["schema-registry"]), Settings())
