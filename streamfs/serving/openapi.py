"""The OpenAPI 3.0 document of the JSON API, served at ``/openapi.json``.

Written by hand next to the routes (:mod:`.api`, :mod:`.web`); a test checks that
every route is documented and every documented path is routed, and fuzzes the API
from this document with schemathesis.
"""

from __future__ import annotations

import functools
from typing import Any

_ERROR = {
    "description": "The problem, as JSON",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error", "detail"],
                "properties": {"error": {"type": "string"}, "detail": {}},
            }
        }
    },
}
_KEY = {"oneOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]}
_ROW = {
    "type": "object",
    "required": ["entity", "features", "last_event_time_ms", "as_of_ms"],
    "properties": {
        "entity": _KEY,
        "features": {"type": "object", "additionalProperties": True},
        "last_event_time_ms": {
            "type": "object",
            "additionalProperties": {"type": "integer", "nullable": True},
        },
        "as_of_ms": {"type": "integer"},
    },
}
_ANY_OBJECT = {"type": "object", "additionalProperties": True}


def _ok(schema: Any, media: str = "application/json") -> dict[str, Any]:
    return {"description": "OK", "content": {media: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _ERROR for s in statuses}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
    }


@functools.cache
def document() -> dict[str, Any]:
    json_body = {
        "required": True,
        "content": {"application/json": {"schema": None}},
    }

    def body(schema: Any) -> dict[str, Any]:
        return {**json_body, "content": {"application/json": {"schema": schema}}}

    paths: dict[str, Any] = {
        "/v1/features/online": {
            "post": {
                "summary": "Features of many entities, exact now, in one Redis round trip",
                "requestBody": body(
                    {
                        "type": "object",
                        "required": ["entities", "features"],
                        "properties": {
                            "entities": {"type": "array", "minItems": 1, "items": _KEY},
                            "features": {
                                "type": "array",
                                "minItems": 1,
                                "items": {"type": "string", "minLength": 1},
                                "description": "view:feature, or a name unique across views",
                            },
                        },
                    }
                ),
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "properties": {"results": {"type": "array", "items": _ROW}},
                        }
                    ),
                    **_errors(400, 413, 422, 503),
                },
            }
        },
        "/v1/features/online/{view}/{entity}": {
            "get": {
                "summary": "Features of one entity of one view",
                "parameters": [
                    _path_param("view", "feature view name"),
                    _path_param("entity", "entity key"),
                    {
                        "name": "features",
                        "in": "query",
                        "required": False,
                        "description": "comma-separated feature names (default: all)",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {"200": _ok(_ROW), **_errors(404, 422, 503)},
            }
        },
        "/v1/push/{source}": {
            "post": {
                "summary": "Check events against the source's schema and produce them",
                "parameters": [_path_param("source", "source name")],
                "requestBody": body(
                    {
                        "type": "object",
                        "required": ["events"],
                        "properties": {
                            "events": {"type": "array", "minItems": 1, "items": _ANY_OBJECT}
                        },
                    }
                ),
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "properties": {
                                "source": {"type": "string"},
                                "topic": {"type": "string"},
                                "accepted": {"type": "integer"},
                            },
                        }
                    ),
                    **_errors(400, 404, 413, 422, 503),
                },
            }
        },
        "/v1/registry/views": {
            "get": {
                "summary": "Every feature view",
                "responses": {"200": _ok(_ANY_OBJECT)},
            }
        },
        "/v1/registry/views/{name}": {
            "get": {
                "summary": "One feature view with its versions and features",
                "parameters": [_path_param("name", "feature view name")],
                "responses": {"200": _ok(_ANY_OBJECT), **_errors(404)},
            }
        },
        "/v1/registry/features": {
            "get": {"summary": "Every feature", "responses": {"200": _ok(_ANY_OBJECT)}}
        },
        "/v1/registry/features/{name}": {
            "get": {
                "summary": "One feature: definition, versions, lineage",
                "parameters": [_path_param("name", "feature name")],
                "responses": {"200": _ok(_ANY_OBJECT), **_errors(404)},
            }
        },
        "/v1/stream/{view}/{entity}": {
            "get": {
                "summary": "Server-sent events: the entity's features whenever they change",
                "parameters": [
                    _path_param("view", "feature view name"),
                    _path_param("entity", "entity key"),
                ],
                "responses": {
                    "200": _ok({"type": "string"}, "text/event-stream"),
                    **_errors(404),
                },
            }
        },
        "/v1/freshness": {
            "get": {
                "summary": "Per view: newest event time, lag; per source: events/s, DLQ counts",
                "responses": {"200": _ok(_ANY_OBJECT)},
            }
        },
        "/healthz": {
            "get": {"summary": "The process answers", "responses": {"200": _ok(_ANY_OBJECT)}}
        },
        "/readyz": {
            "get": {
                "summary": "Redis and Kafka reachable, registry loaded",
                "responses": {"200": _ok(_ANY_OBJECT), "503": _ok(_ANY_OBJECT)},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": _ok({"type": "string"}, "text/plain")},
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _ok(_ANY_OBJECT)}}
        },
        "/": {
            "get": {
                "summary": "Web view",
                "responses": {"200": _ok({"type": "string"}, "text/html")},
            }
        },
        "/views/{name}": {
            "get": {
                "summary": "Web view of one feature view",
                "parameters": [_path_param("name", "feature view name")],
                "responses": {"200": _ok({"type": "string"}, "text/html"), **_errors(404)},
            }
        },
        "/features/{name}": {
            "get": {
                "summary": "Web view of one feature",
                "parameters": [_path_param("name", "feature name")],
                "responses": {"200": _ok({"type": "string"}, "text/html"), **_errors(404)},
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "streamfs feature server", "version": "1"},
        "paths": paths,
    }
