"""A private topology and an in-process server for serving tests.

Each test gets its own registry topic, Redis namespace and source topic, so tests
run in any order and in parallel with others on the same services.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streamfs.definitions import Aggregation, Entity, FeatureView
from streamfs.serving.app import Server, ServerOptions, build_app
from streamfs.settings import Settings
from streamfs.store import FeatureStore
from tests.conftest import Services
from tests.worker_fixtures import FEATURES, purchase_source

VIEW = "user_purchases"


def purchase_view(topic: str) -> list[object]:
    """The entity, source and a view whose features are :data:`FEATURES` (so
    :func:`tests.worker_fixtures.brute_force` checks them)."""
    user = Entity("user", ("user_id",), description="A shop customer.")
    source = purchase_source(topic)
    features = [
        Aggregation(
            name,
            function,
            column,
            window=window,
            hop=hop,
            description=f"{function} of {column or 'events'} over {window // 60_000} min",
        )
        for name, function, column, window, hop in FEATURES
    ]
    view = FeatureView(
        VIEW, user, source, tuple(features), description="What users bought.", owner="tests"
    )
    return [user, source, view]


@dataclass
class Deployment:
    settings: Settings
    store: FeatureStore
    topic: str
    namespace: str


@pytest.fixture
def deployment(services: Services, unique: Callable[[str], str]) -> Deployment:
    settings = dataclasses.replace(
        services.settings, registry_topic=unique("registry"), namespace=unique("ns")
    )
    topic = unique("purchases")
    store = FeatureStore(settings, who="tests")
    store.apply(purchase_view(topic))
    return Deployment(settings, store, topic, settings.namespace)


@pytest.fixture
async def client(deployment: Deployment) -> AsyncIterator[TestClient[Any, Any]]:
    server = Server(
        deployment.settings,
        ServerOptions(refresh_s=0.5, stream_interval_s=0.2),
        deployment.store.registry_state,
    )
    async with TestClient(TestServer(build_app(server))) as client:
        yield client
