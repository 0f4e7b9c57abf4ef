"""Fuzz the HTTP API from its own OpenAPI document with schemathesis: no input gets a 5xx.

The server runs on a real port in a thread (schemathesis speaks HTTP through
``requests``); examples per operation are few, so the whole run stays well under a
minute. The server-sent event stream is left out: it never ends by design.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings

from streamfs.serving.app import Server, ServerOptions, build_app
from tests.serving.fixtures import Deployment, deployment

__all__ = ["deployment"]  # fixture
pytestmark = pytest.mark.services
schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = 25
SKIP_PATHS = {"/v1/stream/{view}/{entity}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def base_url(deployment: Deployment) -> Iterator[str]:
    server = Server(
        deployment.settings, ServerOptions(refresh_s=1.0), deployment.store.registry_state
    )
    port = _free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(build_app(server), access_log=None)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30)
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_no_input_gets_a_server_error(base_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in SKIP_PATHS:
            continue
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            response = case.call(base_url=base_url, timeout=10)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.query} {case.body!r}:"
                    f" {response.status_code} {response.text[:300]}"
                )

        fuzz()
    assert operations >= 14
    assert not failures, "\n".join(failures[:10])
