"""The Kafka-backed registry against real Kafka, spoken to by confluent-kafka's own client,
``AvroSerializer`` and ``AvroDeserializer``: restarts, two instances, concurrent writers."""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]  # re-exported at runtime, not in its stubs
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from streamfs.schemas.registry.server import serve
from streamfs.services.process import free_port

pytestmark = pytest.mark.services


def record(name: str, **fields: str | dict[str, object]) -> str:
    body = [
        spec if isinstance(spec, dict) else {"name": field, "type": spec}
        for field, spec in fields.items()
    ]
    return json.dumps({"type": "record", "name": name, "namespace": "test", "fields": body})


ORDER_V1 = record("Order", order_id="string", amount="double")
ORDER_V2 = record(
    "Order",
    order_id="string",
    amount="double",
    currency={"name": "currency", "type": "string", "default": "EUR"},
)
ORDER_BAD = record("Order", order_id="string", amount="double", customer="string")


def http(method: str, url: str, body: object = None) -> tuple[int, Any]:
    """A bare request (stdlib only), as a client without confluent-kafka would send it."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or condition}")
        time.sleep(0.02)


class RunningRegistry:
    """``serve`` on its own event loop in a background thread, as a separate instance would."""

    def __init__(self, bootstrap: str, topic: str, port: int | None = None) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            task = asyncio.create_task(serve("127.0.0.1", self.port, self.bootstrap, self.topic))
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except BaseException as exc:
                self._error = exc

        self._loop.run_until_complete(main())
        self._loop.close()

    def _answers(self) -> bool:
        if not self._thread.is_alive():
            raise AssertionError(f"registry on port {self.port} died: {self._error!r}")
        try:
            return http("GET", self.url + "/") == (200, {})
        except OSError:  # not listening yet
            return False

    def start(self) -> RunningRegistry:
        self._thread.start()
        wait_until(self._answers, what=f"registry on port {self.port}")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()
        assert self._error is None, self._error

    def client(self) -> SchemaRegistryClient:
        return SchemaRegistryClient({"url": self.url})


@pytest.fixture
def topic(unique: Callable[[str], str]) -> str:
    return unique("_schemas")


@pytest.fixture
def registries(kafka_bootstrap: str, topic: str) -> Iterator[Callable[..., RunningRegistry]]:
    started: list[RunningRegistry] = []

    def start(port: int | None = None) -> RunningRegistry:
        started.append(RunningRegistry(kafka_bootstrap, topic, port).start())
        return started[-1]

    yield start
    for registry in started:
        if registry._thread.is_alive():
            registry.stop()


def test_confluent_client_round_trip(
    registries: Callable[..., RunningRegistry], kafka_bootstrap: str, topic: str
) -> None:
    registry = registries()
    client = registry.client()
    schema_id = client.register_schema("orders-value", Schema(ORDER_V1, "AVRO"))
    # Another client (no cache) registering the same schema gets the same id.
    assert registry.client().register_schema("orders-value", Schema(ORDER_V1, "AVRO")) == schema_id
    assert client.get_schema(schema_id).schema_str == ORDER_V1
    latest = client.get_latest_version("orders-value")
    assert (latest.schema_id, latest.version, latest.subject) == (schema_id, 1, "orders-value")
    assert client.lookup_schema("orders-value", Schema(ORDER_V1, "AVRO")).version == 1
    assert client.get_subjects() == ["orders-value"]
    assert client.get_compatibility() == "BACKWARD"

    assert client.test_compatibility("orders-value", Schema(ORDER_V2, "AVRO")) is True
    assert client.test_compatibility("orders-value", Schema(ORDER_BAD, "AVRO")) is False
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema("orders-value", Schema(ORDER_BAD, "AVRO"))
    assert (refused.value.http_status_code, refused.value.error_code) == (409, 409)
    assert client.register_schema("orders-value", Schema(ORDER_V2, "AVRO")) == schema_id + 1
    assert client.get_versions("orders-value") == [1, 2]

    # confluent-kafka's stubs say str; the client returns the registry's JSON body.
    assert client.set_compatibility("orders-value", "NONE") == {"compatibility": "NONE"}  # type: ignore[comparison-overlap]
    assert client.get_compatibility("orders-value") == "NONE"
    assert client.register_schema("orders-value", Schema(ORDER_BAD, "AVRO")) == schema_id + 2
    assert client.delete_subject("orders-value") == [1, 2, 3]
    assert client.get_subjects() == []

    # The store is a compacted single-partition topic, created by the registry.
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    configs = admin.describe_configs([ConfigResource("TOPIC", topic)])
    (described,) = configs.values()
    assert len(partitions) == 1
    assert described.result(timeout=10)["cleanup.policy"].value == "compact"


def test_avro_serializer_and_deserializer(registries: Callable[..., RunningRegistry]) -> None:
    registry = registries()
    context = SerializationContext("orders", MessageField.VALUE)
    serialize_v1 = AvroSerializer(registry.client(), ORDER_V1)  # auto-registers "orders-value"
    serialize_v2 = AvroSerializer(registry.client(), ORDER_V2)
    old = serialize_v1({"order_id": "o-1", "amount": 12.5}, context)
    new = serialize_v2({"order_id": "o-2", "amount": 3.0, "currency": "USD"}, context)

    magic, old_id = struct.unpack(">bI", old[:5])
    _, new_id = struct.unpack(">bI", new[:5])
    assert magic == 0
    assert http("GET", f"{registry.url}/subjects/orders-value/versions") == (200, [1, 2])
    assert registry.client().get_version("orders-value", 1).schema_id == old_id
    assert registry.client().get_latest_version("orders-value").schema_id == new_id != old_id

    # A fresh client (empty cache) resolves each writer schema by id.
    deserialize = AvroDeserializer(registry.client())
    assert deserialize(old, context) == {"order_id": "o-1", "amount": 12.5}
    assert deserialize(new, context) == {"order_id": "o-2", "amount": 3.0, "currency": "USD"}
    # Schema evolution: a v2 reader fills the default into v1 data, a v1 reader drops it.
    assert AvroDeserializer(registry.client(), ORDER_V2)(old, context) == {
        "order_id": "o-1",
        "amount": 12.5,
        "currency": "EUR",
    }
    assert AvroDeserializer(registry.client(), ORDER_V1)(new, context) == {
        "order_id": "o-2",
        "amount": 3.0,
    }


def test_ids_survive_a_restart(registries: Callable[..., RunningRegistry]) -> None:
    first = registries()
    client = first.client()
    one = client.register_schema("a-value", Schema(ORDER_V1, "AVRO"))
    two = client.register_schema("a-value", Schema(ORDER_V2, "AVRO"))
    client.set_compatibility(level="FULL")
    client.delete_version("a-value", 2)
    first.stop()

    again = registries(port=first.port).client()
    assert again.get_schema(one).schema_str == ORDER_V1
    assert again.get_schema(two).schema_str == ORDER_V2
    assert again.get_versions("a-value") == [1]
    assert again.get_compatibility() == "FULL"
    assert again.register_schema("b-value", Schema(ORDER_V1, "AVRO")) == one
    assert again.register_schema("c-value", Schema(record("Other", x="int"), "AVRO")) == two + 1


def test_two_instances_agree(registries: Callable[..., RunningRegistry]) -> None:
    a, b = registries().client(), registries().client()
    schema_id = a.register_schema("orders-value", Schema(ORDER_V1, "AVRO"))
    # b answers for a write made through a at once: a miss makes it catch up first.
    assert b.get_schema(schema_id).schema_str == ORDER_V1
    assert b.register_schema("orders-value", Schema(ORDER_V1, "AVRO")) == schema_id
    assert b.register_schema("copy-value", Schema(ORDER_V1, "AVRO")) == schema_id
    assert b.register_schema("orders-value", Schema(ORDER_V2, "AVRO")) == schema_id + 1
    assert a.register_schema("orders-value", Schema(ORDER_V2, "AVRO")) == schema_id + 1
    assert a.get_versions("orders-value") == b.get_versions("orders-value") == [1, 2]
    with pytest.raises(SchemaRegistryError) as refused:
        a.register_schema("orders-value", Schema(ORDER_BAD, "AVRO"))
    assert refused.value.http_status_code == 409


def test_concurrent_writers_never_share_an_id(
    registries: Callable[..., RunningRegistry],
) -> None:
    instances = [registries(), registries()]
    per_instance = 12
    for subject in ("shared", "common"):  # unrelated schemas follow each other there
        assert (
            http("PUT", f"{instances[0].url}/config/{subject}", {"compatibility": "NONE"})[0] == 200
        )

    def register_all(index: int) -> list[tuple[str, int]]:
        url = instances[index].url
        results = []
        for n in range(per_instance):
            own = record(f"I{index}N{n}", x="int")
            common = record(f"Common{n}", y="int")  # both instances send this one
            plan = ((f"own-{index}-{n}", own), ("shared", own), ("common", common))
            for subject, schema in plan:
                path = f"{url}/subjects/{subject}/versions"
                status, body = http("POST", path, {"schema": schema})
                assert status == 200, body
                results.append((schema, body["id"]))
        return results

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(register_all, range(2)))

    ids_by_schema: dict[str, set[int]] = {}
    for schema, schema_id in outcomes[0] + outcomes[1]:
        ids_by_schema.setdefault(schema, set()).add(schema_id)
    # One id per schema, whichever instance registered it, and no id for two schemas.
    assert all(len(ids) == 1 for ids in ids_by_schema.values())
    ids = [next(iter(found)) for found in ids_by_schema.values()]
    assert len(set(ids)) == len(ids_by_schema) == 2 * per_instance + per_instance
    assert sorted(ids) == list(range(1, len(ids) + 1))

    for registry in instances:  # both read the same log, so both answer the same
        client = registry.client()
        for schema, (schema_id,) in ids_by_schema.items():
            assert client.get_schema(schema_id).schema_str == schema
        assert client.get_versions("shared") == list(range(1, 2 * per_instance + 1))
        assert client.get_versions("common") == list(range(1, per_instance + 1))
