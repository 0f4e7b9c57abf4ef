"""Fixtures of the offline service tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streamfs.settings import Settings
from streamfs.store import FeatureStore
from tests.offline.helpers import rich_view


@pytest.fixture
def store_settings(kafka_bootstrap: str, redis_url: str, unique: Callable[[str], str]) -> Settings:
    """Settings with a private registry topic and Redis namespace, ``rich_view`` applied."""
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        registry_topic=unique("registry"),
        namespace=unique("ns"),
    )
    view = rich_view()
    FeatureStore(settings).apply([view.entity, view.source, view])
    return settings
