"""The HTTP face of the registry: Confluent Schema Registry's REST API (Avro only), on aiohttp.

Handlers parse the request, read ``store.state`` or hand a pure plan from
``commands`` to ``store.execute``, and answer in Confluent's shapes: bodies as
``application/vnd.schemaregistry.v1+json``, errors as ``{"error_code", "message"}``.
A read that finds nothing first catches up with the store and tries once more,
so a schema registered through another instance is found at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web

from streamfs.schemas.registry import commands
from streamfs.schemas.registry.compat import Compatibility, parse_level
from streamfs.schemas.registry.errors import (
    BadRequest,
    InvalidSchema,
    NotFoundError,
    RegistryError,
    SchemaNotFound,
    SubjectConfigNotFound,
    UnsupportedMediaType,
)
from streamfs.schemas.registry.names import DEFAULT_TOPIC
from streamfs.schemas.registry.parsing import AVRO, SCHEMA_TYPES, ParsedSchema, parse
from streamfs.schemas.registry.state import RegistryState, Version, parse_version
from streamfs.schemas.registry.store import Store

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPTED_REQUEST_TYPES = frozenset(
    {
        MEDIA_TYPE,
        "application/vnd.schemaregistry+json",
        "application/json",
        "application/octet-stream",
    }
)
STORE_KEY: web.AppKey[Store] = web.AppKey("store", Store)
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = structlog.get_logger(__name__)


def _reply(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, content_type=MEDIA_TYPE)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as exc:
        return _reply({"error_code": exc.error_code, "message": str(exc)}, exc.http_status)
    except web.HTTPException as exc:  # unknown path, wrong method
        return _reply(
            {"error_code": exc.status, "message": f"HTTP {exc.status} {exc.reason}"}, exc.status
        )
    except Exception as exc:
        log.exception("schema_registry_request_failed", method=request.method, path=request.path)
        return _reply(
            {"error_code": 50001, "message": f"Error in the backend data store: {exc!r}"}, 500
        )


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() == "true"


def _store(request: web.Request) -> Store:
    return request.app[STORE_KEY]


async def _read(request: web.Request, query: Callable[[RegistryState], T]) -> T:
    store = _store(request)
    try:
        return query(store.state)
    except NotFoundError:
        await store.sync()
        return query(store.state)


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type not in ACCEPTED_REQUEST_TYPES and request.headers.get("Content-Type"):
        raise UnsupportedMediaType(f"HTTP 415 Unsupported Media Type: {request.content_type}")
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        raise BadRequest(f"Request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    return body


async def _schema_from(request: web.Request) -> ParsedSchema:
    body = await _body(request)
    schema_type = str(body.get("schemaType") or AVRO).upper()
    if schema_type not in SCHEMA_TYPES:
        raise InvalidSchema(
            f"Schema type {schema_type!r} is not supported: this registry serves AVRO only"
        )
    if body.get("references"):
        raise InvalidSchema("Schema references are not supported by this registry")
    text = body.get("schema")
    if not isinstance(text, str) or not text.strip():
        raise InvalidSchema("Empty schema")
    return parse(text)


def _version_body(version: Version) -> dict[str, Any]:
    return {
        "subject": version.subject,
        "version": version.version,
        "id": version.schema_id,
        "schema": version.schema,
    }


def _schema_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError as exc:
        raise SchemaNotFound(f"Schema {request.match_info['id']} not found") from exc


# -- subjects and versions ------------------------------------------------------------


async def _root(request: web.Request) -> web.Response:
    return _reply({})


async def _schema_types(request: web.Request) -> web.Response:
    return _reply(list(SCHEMA_TYPES))


async def _subjects(request: web.Request) -> web.Response:
    prefix = request.query.get("subjectPrefix", "")
    subjects = _store(request).state.subjects(include_deleted=_flag(request, "deleted"))
    return _reply([s for s in subjects if s.startswith(prefix)])


async def _register(request: web.Request) -> web.Response:
    subject, schema = request.match_info["subject"], await _schema_from(request)
    registered = await _store(request).execute(lambda s: commands.register(s, subject, schema))
    return _reply({"id": registered.schema_id})


async def _lookup(request: web.Request) -> web.Response:
    subject, schema = request.match_info["subject"], await _schema_from(request)
    deleted = _flag(request, "deleted")
    found = await _read(request, lambda s: commands.lookup(s, subject, schema, deleted))
    return _reply(_version_body(found))


async def _versions(request: web.Request) -> web.Response:
    subject, deleted = request.match_info["subject"], _flag(request, "deleted")
    found = await _read(request, lambda s: s.versions(subject, deleted))
    return _reply([v.version for v in found])


async def _get_version(request: web.Request) -> web.Response:
    return _reply(_version_body(await _version(request)))


async def _get_version_schema(request: web.Request) -> web.Response:
    return _reply(json.loads((await _version(request)).schema))


async def _version(request: web.Request) -> Version:
    subject, deleted = request.match_info["subject"], _flag(request, "deleted")
    spec = parse_version(request.match_info["version"])
    return await _read(request, lambda s: s.version(subject, spec, deleted))


async def _delete_subject(request: web.Request) -> web.Response:
    subject, permanent = request.match_info["subject"], _flag(request, "permanent")
    deleted = await _store(request).execute(
        lambda s: commands.delete_subject(s, subject, permanent)
    )
    return _reply(deleted)


async def _delete_version(request: web.Request) -> web.Response:
    subject, permanent = request.match_info["subject"], _flag(request, "permanent")
    spec = parse_version(request.match_info["version"])
    deleted = await _store(request).execute(
        lambda s: commands.delete_version(s, subject, spec, permanent)
    )
    return _reply(deleted)


# -- ids ------------------------------------------------------------------------------


async def _schema_by_id(request: web.Request) -> web.Response:
    schema_id = _schema_id(request)
    return _reply({"schema": await _read(request, lambda s: s.schema_text(schema_id))})


async def _raw_schema_by_id(request: web.Request) -> web.Response:
    schema_id = _schema_id(request)
    return _reply(json.loads(await _read(request, lambda s: s.schema_text(schema_id))))


async def _uses_of_id(request: web.Request) -> list[Version]:
    schema_id, deleted = _schema_id(request), _flag(request, "deleted")
    return await _read(request, lambda s: s.uses_of(schema_id, deleted))


async def _subjects_by_id(request: web.Request) -> web.Response:
    return _reply(sorted({v.subject for v in await _uses_of_id(request)}))


async def _versions_by_id(request: web.Request) -> web.Response:
    uses = await _uses_of_id(request)
    return _reply([{"subject": v.subject, "version": v.version} for v in uses])


# -- config and compatibility ---------------------------------------------------------


async def _get_global_config(request: web.Request) -> web.Response:
    level = _store(request).state.effective_compatibility(None)
    return _reply({"compatibilityLevel": level.value})


async def _put_config(request: web.Request) -> web.Response:
    subject = request.match_info.get("subject")
    level = parse_level((await _body(request)).get("compatibility"))
    done = await _store(request).execute(lambda s: commands.set_config(s, subject, level))
    return _reply({"compatibility": done.value})


async def _get_subject_config(request: web.Request) -> web.Response:
    subject, default_to_global = request.match_info["subject"], _flag(request, "defaultToGlobal")

    def query(state: RegistryState) -> Compatibility:
        level = state.config(subject)
        if level is not None:
            return level
        if default_to_global:
            return state.effective_compatibility(subject)
        raise SubjectConfigNotFound(
            f"Subject '{subject}' does not have subject-level compatibility configured"
        )

    return _reply({"compatibilityLevel": (await _read(request, query)).value})


async def _delete_subject_config(request: web.Request) -> web.Response:
    subject = request.match_info["subject"]
    level = await _store(request).execute(lambda s: commands.delete_config(s, subject))
    return _reply({"compatibilityLevel": level.value})


async def _check_compatibility(request: web.Request) -> web.Response:
    subject, schema = request.match_info["subject"], await _schema_from(request)
    raw_version = request.match_info.get("version")
    spec = parse_version(raw_version) if raw_version is not None else None
    problems = await _read(
        request, lambda s: commands.check_compatibility(s, subject, spec, schema)
    )
    body: dict[str, Any] = {"is_compatible": not problems}
    if _flag(request, "verbose"):
        body["messages"] = problems
    return _reply(body)


def create_app(store: Store) -> web.Application:
    """The registry's aiohttp application over ``store``."""
    app = web.Application(middlewares=[_errors])
    app[STORE_KEY] = store
    app.add_routes(
        [
            web.get("/", _root),
            web.get("/schemas/types", _schema_types),
            web.get("/subjects", _subjects),
            web.post("/subjects/{subject}", _lookup),
            web.delete("/subjects/{subject}", _delete_subject),
            web.post("/subjects/{subject}/versions", _register),
            web.get("/subjects/{subject}/versions", _versions),
            web.get("/subjects/{subject}/versions/{version}", _get_version),
            web.delete("/subjects/{subject}/versions/{version}", _delete_version),
            web.get("/subjects/{subject}/versions/{version}/schema", _get_version_schema),
            web.get("/schemas/ids/{id}", _schema_by_id),
            web.get("/schemas/ids/{id}/schema", _raw_schema_by_id),
            web.get("/schemas/ids/{id}/subjects", _subjects_by_id),
            web.get("/schemas/ids/{id}/versions", _versions_by_id),
            web.get("/config", _get_global_config),
            web.put("/config", _put_config),
            web.get("/config/{subject}", _get_subject_config),
            web.put("/config/{subject}", _put_config),
            web.delete("/config/{subject}", _delete_subject_config),
            web.post("/compatibility/subjects/{subject}/versions", _check_compatibility),
            web.post("/compatibility/subjects/{subject}/versions/{version}", _check_compatibility),
        ]
    )
    return app


async def serve(host: str, port: int, kafka_bootstrap: str, topic: str = DEFAULT_TOPIC) -> None:
    """Run a Kafka-backed registry on ``host:port`` until cancelled."""
    from streamfs.schemas.registry.kafka_store import KafkaStore

    store = KafkaStore(kafka_bootstrap, topic)
    await store.start()
    runner = web.AppRunner(create_app(store), access_log=None)
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.info("schema_registry_listening", host=host, port=port, topic=topic)
        await asyncio.Event().wait()  # until cancelled
    finally:
        await runner.cleanup()
        await store.stop()
