"""Where registry records live: the :class:`Backend` protocol and an in-memory one for tests.

A backend does two things: :meth:`~Backend.load` the current state, and
:meth:`~Backend.commit` a plan made from the state as it is at that moment, writing
all of the plan's records or none. The Kafka backend is :mod:`streamfs.registry.kafka`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from streamfs.registry.plan import Plan
from streamfs.registry.records import Record, decode, encode
from streamfs.registry.state import RegistryState


class Backend(Protocol):
    async def load(self) -> RegistryState:
        """The state with every record committed before this call."""
        ...

    async def commit(self, make: Callable[[RegistryState], Plan]) -> Plan:
        """Make a plan from the latest state and write its records atomically; returns it.

        ``make`` may raise (a refused definition): then nothing is written.
        """
        ...

    async def close(self) -> None: ...


class MemoryBackend:
    """Records in a list (encoded and decoded, as Kafka would hold them)."""

    def __init__(self) -> None:
        self.log: list[tuple[bytes, bytes]] = []

    def records(self) -> list[Record]:
        return [r for k, v in self.log if (r := decode(k, v)) is not None]

    async def load(self) -> RegistryState:
        return RegistryState(self.records())

    async def commit(self, make: Callable[[RegistryState], Plan]) -> Plan:
        plan = make(await self.load())
        self.log.extend(encode(r) for r in plan.records)
        return plan

    async def close(self) -> None:
        return None
