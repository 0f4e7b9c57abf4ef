"""A schema registry speaking Confluent Schema Registry's REST API, for Avro, stored in Kafka.

Modules, from the inside out:

- ``parsing``: Avro schema text, validated; identity by Parsing Canonical Form.
- ``compat``: compatibility levels and the check (Apache ``avro``'s rules).
- ``records``: the records of the ``_schemas`` topic and their bytes.
- ``state``: subjects, versions, ids and config, rebuilt by applying records (pure).
- ``commands``: writes planned as pure functions of the state (records + answer).
- ``store``: the ``Store`` protocol and ``MemoryStore``.
- ``kafka_store``: ``KafkaStore``, the durable store, and how one writer is chosen.
- ``server``: the aiohttp app (``create_app``) and ``serve``.
- ``command``: the ``streamfs schema-registry`` subcommand.

Importing this package imports neither aiohttp nor aiokafka.
"""

from streamfs.schemas.registry.compat import Compatibility
from streamfs.schemas.registry.errors import RegistryError
from streamfs.schemas.registry.names import DEFAULT_TOPIC
from streamfs.schemas.registry.state import RegistryState
from streamfs.schemas.registry.store import MemoryStore, Store

__all__ = [
    "DEFAULT_TOPIC",
    "Compatibility",
    "MemoryStore",
    "RegistryError",
    "RegistryState",
    "Store",
]
