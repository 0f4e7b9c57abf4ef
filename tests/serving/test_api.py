"""The HTTP API in-process against the real Redis, Kafka and schema registry: registry
routes, push validation (whole batches, every bad field named), reads, health, metrics."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from streamfs.online import UnknownFeatureError
from streamfs.push import PushRejectedError, UnknownSourceError
from streamfs.serving.openapi import document
from tests.services.kafka_helpers import read_records
from tests.serving.fixtures import VIEW, Deployment, client, deployment

__all__ = ["client", "deployment"]  # fixtures
pytestmark = pytest.mark.services

Client = TestClient[Any, Any]


def make_event(**overrides: Any) -> dict[str, Any]:
    event = {
        "user_id": "u1",
        "order_id": "o1",
        "amount": 12.5,
        "currency": "EUR",
        "category": "books",
        "created_at": time.time_ns() // 1_000_000 - 1_000,
    }
    return event | overrides


async def test_registry_routes_show_views_features_versions_and_lineage(client: Client) -> None:
    views = (await (await client.get("/v1/registry/views")).json())["views"]
    assert [v["name"] for v in views] == [VIEW]
    view = await (await client.get(f"/v1/registry/views/{VIEW}")).json()
    assert view["versions"][0]["version"] == 1
    assert view["description"] == "What users bought."
    assert "purchases_1h" in [f["name"] for f in view["features"]]
    features = (await (await client.get("/v1/registry/features")).json())["features"]
    assert len(features) == 8
    one = await (await client.get("/v1/registry/features/purchases_1h")).json()
    assert one["lineage"]["view"] == VIEW
    assert one["lineage"]["source"] == "purchases"
    assert one["versions"][0]["version"] == 1
    for path in ("/v1/registry/views/nope", "/v1/registry/features/nope", "/no/such/route"):
        response = await client.get(path)
        assert response.status == 404
        assert set(await response.json()) == {"error", "detail"}


async def test_a_bad_batch_is_rejected_whole_naming_every_bad_field(
    client: Client, deployment: Deployment
) -> None:
    now = time.time_ns() // 1_000_000
    events = [
        make_event(),
        make_event(amount="lots", currency=None),
        "not an object",
        make_event(created_at=now + 3_600_000),
        {"order_id": "o9"},
    ]
    response = await client.post("/v1/push/purchases", json={"events": events})
    assert response.status == 422
    body = await response.json()
    assert body["error"] == "invalid_events"
    bad = {(p["index"], p["field"], p["reason"]) for p in body["detail"]}
    assert {
        (1, "amount", "bad_value"),
        (1, "currency", "missing_field"),
        (2, None, "not_an_object"),
        (3, "created_at", "future"),
        (4, "user_id", "missing_field"),
        (4, "created_at", "missing_field"),
    } <= bad
    assert not any(index == 0 for index, _f, _r in bad)
    # Nothing of the batch was written (not even its good first event).
    assert await read_records(deployment.settings.kafka_bootstrap or "", deployment.topic) == []
    bodies: list[Any] = [{"events": []}, {"events": "x"}, [1], {}]
    for body_json in bodies:
        response = await client.post("/v1/push/purchases", json=body_json)
        assert response.status == 422, body_json
    response = await client.post("/v1/push/purchases", data=b"{not json")
    assert response.status == 400
    assert (await client.post("/v1/push/nope", json={"events": [make_event()]})).status == 404


async def test_good_events_are_produced_and_the_sdk_checks_the_same_way(
    client: Client, deployment: Deployment
) -> None:
    response = await client.post(
        "/v1/push/purchases", json={"events": [make_event(), make_event(user_id="u2")]}
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["accepted"] == 2
    with pytest.raises(PushRejectedError) as rejected:
        deployment.store.push("purchases", [make_event(), make_event(amount=None)])
    assert [(p.index, p.field) for p in rejected.value.problems] == [(1, "amount")]
    with pytest.raises(UnknownSourceError, match="nope"):
        deployment.store.push("nope", [make_event()])
    assert deployment.store.push("purchases", [make_event(user_id="u3")]) == 1
    records = await read_records(deployment.settings.kafka_bootstrap or "", deployment.topic)
    assert sorted(r.key for r in records) == [b"u1", b"u2", b"u3"]


async def test_reads_name_unknown_features_and_give_empty_values_for_unknown_entities(
    client: Client, deployment: Deployment
) -> None:
    response = await client.post(
        "/v1/features/online",
        json={"entities": ["nobody", 7], "features": ["purchases_1h", f"{VIEW}:amount_sum_1h"]},
    )
    assert response.status == 200, await response.text()
    rows = (await response.json())["results"]
    assert [r["entity"] for r in rows] == ["nobody", 7]
    assert rows[0]["features"] == {"purchases_1h": 0, f"{VIEW}:amount_sum_1h": 0}
    assert rows[0]["last_event_time_ms"] == {VIEW: None}
    response = await client.post(
        "/v1/features/online", json={"entities": ["a"], "features": ["nope", "purchases_1h", "x"]}
    )
    assert response.status == 422
    assert (await response.json())["detail"] == "unknown features: nope, x"
    response = await client.get(f"/v1/features/online/{VIEW}/nobody?features=purchases_1h")
    assert (await response.json())["features"] == {"purchases_1h": 0}
    response = await client.get(f"/v1/features/online/{VIEW}/nobody?features=zzz")
    assert response.status == 404
    assert "zzz" in (await response.json())["detail"]
    assert (await client.get("/v1/features/online/noview/x")).status == 404
    bad = await client.post("/v1/features/online", json={"entities": [True], "features": ["a"]})
    assert bad.status == 422
    with pytest.raises(UnknownFeatureError, match="nope"):
        deployment.store.get_online_features("x", ["nope"])


async def test_health_readiness_metrics_and_an_openapi_document_matching_the_routes(
    client: Client,
) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200, await ready.text()
    assert (await ready.json())["checks"] == {"redis": True, "kafka": True, "registry": True}
    await client.get("/v1/registry/views")
    text = await (await client.get("/metrics")).text()
    assert (
        'streamfs_http_requests_total{method="GET",route="/v1/registry/views",status="200"}' in text
    )
    assert "streamfs_http_request_duration_seconds_bucket" in text
    routed = {
        (r.method.lower(), r.resource.canonical)
        for r in client.app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    documented = {(m, p) for p, ops in document()["paths"].items() for m in ops}
    assert routed == documented


async def test_a_body_over_the_limit_gets_413(client: Client) -> None:
    response = await client.post("/v1/push/purchases", data=b"[" + b" " * (1 << 21) + b"]")
    assert response.status == 413
    assert set(await response.json()) == {"error", "detail"}
