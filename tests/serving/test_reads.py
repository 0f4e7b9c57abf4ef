"""Online reads over HTTP with the server's value cache, against the real Redis: new state
is served at once, a window boundary changes a value with no write at all, an expired
key reads as empty, and HTTP, the SDK and a fresh decode agree. Plus the catalog keeping
layout objects across registry reloads (what lets cached values survive a reload)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from aiohttp.test_utils import TestClient, TestServer

from streamfs.definitions import FeatureView
from streamfs.definitions.compile import compile_view
from streamfs.online import OnlineWrite, OnlineWriter, UnknownFeatureError, online_key
from streamfs.serving.app import SERVER, Server, ServerOptions, build_app
from streamfs.serving.catalog import Catalog
from streamfs.tiles import EntityTiles
from tests.serving.fixtures import VIEW, Deployment, deployment, purchase_view

__all__ = ["deployment"]  # fixture
pytestmark = pytest.mark.services

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
T0 = 1_900_000_000_000 // DAY_MS * DAY_MS + 7 * 60_000  # a fixed "now", 7 min into a day
NAMES = "purchases_1h,amount_sum_1h,purchases_24h,categories_7d"


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
async def served(deployment: Deployment) -> AsyncIterator[tuple[TestClient[Any, Any], Clock]]:
    clock = Clock(T0)
    server = Server(
        deployment.settings, ServerOptions(refresh_s=0.5), deployment.store.registry_state, clock
    )
    async with TestClient(TestServer(build_app(server))) as client:
        yield client, clock


class Tiles:
    """Writes an entity's tiles the way the worker does (OnlineWriter, rising offsets)."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.compiled = compile_view(deployment.store.registry_state().view(VIEW))
        assert deployment.settings.redis_url
        self.client = redis.asyncio.Redis.from_url(deployment.settings.redis_url)
        self.offset = 0

    def key(self, entity: str) -> str:
        return online_key(VIEW, 1, entity, self.deployment.namespace)

    async def write(self, entity: str, events: list[tuple[int, float, str]]) -> None:
        state = EntityTiles(self.compiled.layout)
        for seq, (t, amount, category) in enumerate(events):
            record = {"user_id": entity, "amount": amount, "category": category}
            state.add_event(t, self.compiled.inputs(record), seq)
        self.offset += 1
        write = OnlineWrite(self.key(entity), self.offset, state.encode(), events[-1][0], DAY_MS)
        writer = OnlineWriter(self.client, lambda: T0)
        assert await writer.write([write]) == 1


async def _get(client: TestClient[Any, Any], entity: str) -> dict[str, Any]:
    response = await client.get(f"/v1/features/online/{VIEW}/{entity}?features={NAMES}")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_new_state_window_boundaries_and_expiry_through_the_cache(
    served: tuple[TestClient[Any, Any], Clock], deployment: Deployment
) -> None:
    client, clock = served
    cache = client.app[SERVER].value_cache
    tiles = Tiles(deployment)
    await tiles.write("u1", [(T0 - 60_000, 10.0, "a"), (T0 - 30_000, 5.0, "b")])

    first = await _get(client, "u1")
    assert first["features"] == {
        "purchases_1h": 2, "amount_sum_1h": 15.0, "purchases_24h": 2, "categories_7d": 2
    }  # fmt: skip
    assert first["last_event_time_ms"] == {VIEW: T0 - 30_000}
    assert first["as_of_ms"] == T0
    clock.now_ms += 1_000
    hits = cache.hits
    assert (await _get(client, "u1"))["features"] == first["features"]
    assert cache.hits == hits + 1  # a lookup, same answer

    # The worker writes a new state: served at once, never the cached values.
    await tiles.write(
        "u1", [(T0 - 60_000, 10.0, "a"), (T0 - 30_000, 5.0, "b"), (T0 + 500, 1.0, "c")]
    )
    now = await _get(client, "u1")
    assert now["features"] == {
        "purchases_1h": 3, "amount_sum_1h": 16.0, "purchases_24h": 3, "categories_7d": 3
    }  # fmt: skip
    assert now["last_event_time_ms"] == {VIEW: T0 + 500}

    # No writes from here on: the 1 h window's tail passes the events' 5-minute tile
    # [T0 - 2 min, T0 + 3 min) at its end + 1 h, and the count falls to 0 right then.
    tile_end = (T0 // 300_000 + 1) * 300_000
    clock.now_ms = tile_end + HOUR_MS - 1
    assert (await _get(client, "u1"))["features"]["purchases_1h"] == 3
    clock.now_ms = tile_end + HOUR_MS
    later = await _get(client, "u1")
    assert later["features"] == {
        "purchases_1h": 0, "amount_sum_1h": 0, "purchases_24h": 3, "categories_7d": 3
    }  # fmt: skip
    assert later["as_of_ms"] == tile_end + HOUR_MS
    # HTTP, the SDK and a read without any cache agree at that instant.
    sdk = deployment.store.get_online_features("u1", NAMES.split(","), at_ms=clock.now_ms)
    assert not isinstance(sdk, list)
    assert sdk.values == later["features"]

    # The key expires (TTL) or is deleted: no state, empty values, no last event time.
    await tiles.client.delete(tiles.key("u1"))
    gone = await _get(client, "u1")
    assert gone["features"] == {
        "purchases_1h": 0, "amount_sum_1h": 0, "purchases_24h": 0, "categories_7d": 0
    }  # fmt: skip
    assert gone["last_event_time_ms"] == {VIEW: None}
    await tiles.client.aclose()


async def test_a_batch_mixes_known_unknown_and_repeated_entities_in_order(
    served: tuple[TestClient[Any, Any], Clock], deployment: Deployment
) -> None:
    client, clock = served
    tiles = Tiles(deployment)
    await tiles.write("a", [(T0 - 1_000, 1.0, "x")])
    await tiles.write("b", [(T0 - 2 * HOUR_MS, 2.0, "y"), (T0 - 1_000, 3.0, "y")])
    features = ["purchases_1h", f"{VIEW}:purchases_24h", "amount_sum_1h"]
    for _ in range(2):  # the second pass is served from the cache
        response = await client.post(
            "/v1/features/online",
            json={"entities": ["a", "nobody", "b", "a"], "features": features},
        )
        assert response.status == 200, await response.text()
        rows = (await response.json())["results"]
        assert [r["entity"] for r in rows] == ["a", "nobody", "b", "a"]
        assert [list(r["features"].values()) for r in rows] == [
            [1, 1, 1.0], [0, 0, 0], [1, 2, 3.0], [1, 1, 1.0]
        ]  # fmt: skip
        assert [list(r["features"]) for r in rows] == [features] * 4
        assert rows[1]["last_event_time_ms"] == {VIEW: None}
    sdk = deployment.store.get_online_features(["a", "nobody", "b"], features, at_ms=clock.now_ms)
    assert isinstance(sdk, list)
    assert [list(r.values.values()) for r in sdk] == [[1, 1, 1.0], [0, 0, 0], [1, 2, 3.0]]
    await tiles.client.aclose()


async def test_the_catalog_and_the_sdk_keep_a_layout_object_until_its_view_changes(
    deployment: Deployment,
) -> None:
    store = deployment.store
    first = Catalog.of(store.registry_state(), 1)
    again = Catalog.of(store.registry_state(), 2, first)
    assert again.layouts[VIEW] is first.layouts[VIEW]
    store.refresh()  # the SDK's copy, the same way
    sdk_first = store._reader_layouts()[VIEW]
    store.refresh()
    assert store._reader_layouts()[VIEW] is sdk_first
    user, source, view = purchase_view(deployment.topic)
    assert isinstance(view, FeatureView)
    store.apply([user, source, dataclasses.replace(view, description="Again.")])
    reloaded = Catalog.of(store.registry_state(), 3, again)
    assert reloaded.layouts[VIEW] is not first.layouts[VIEW]
    store.refresh()
    assert store._reader_layouts()[VIEW] is not sdk_first
    assert reloaded.layouts[VIEW].feature_names == first.layouts[VIEW].feature_names
    # Resolved feature lists are per snapshot, and unknown names still fail every time.
    assert reloaded.selection(["purchases_1h"]) is reloaded.selection(["purchases_1h"])
    for _ in range(2):
        with pytest.raises(UnknownFeatureError, match="nope"):
            reloaded.selection(["nope"])


class FakeTopicStats:
    def __init__(self) -> None:
        self.ends = [0, 0, 3, 3, 4]

    async def end_offsets(self, topics: list[str]) -> dict[str, int]:
        if not self.ends:
            raise OSError("Kafka went away")
        return {topics[0]: self.ends.pop(0)}


async def test_the_server_reloads_the_registry_only_when_its_topic_moved(
    deployment: Deployment,
) -> None:
    server = Server(deployment.settings, ServerOptions(), deployment.store.registry_state)
    server.topic_stats = FakeTopicStats()
    moved = [await server._registry_moved() for _ in range(6)]
    # first look, same, grown, same, grown, unknown (reload to be safe)
    assert moved == [True, False, True, False, True, True]
