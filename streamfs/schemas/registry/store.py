"""Where registry state lives: the :class:`Store` protocol and an in-memory store.

The HTTP layer reads ``store.state`` and changes it only through
``store.execute(plan)``, so it runs the same against :class:`MemoryStore` (unit
tests, a throwaway registry) and ``kafka_store.KafkaStore`` (durable, shared).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from streamfs.schemas.registry.commands import Outcome
from streamfs.schemas.registry.state import RegistryState

T = TypeVar("T")


class Store(Protocol):
    @property
    def state(self) -> RegistryState:
        """The state as far as this store has read; may trail other instances' writes."""
        ...

    async def sync(self) -> None:
        """Catch up with every write committed before the call (through any instance)."""
        ...

    async def execute(self, plan: Callable[[RegistryState], Outcome[T]]) -> T:
        """Run ``plan`` against current state as the only writer, persist its records,
        apply them, and return its result. Errors ``plan`` raises propagate unchanged."""
        ...


class MemoryStore:
    """A store in this process's memory: nothing survives it, nothing else shares it."""

    def __init__(self) -> None:
        self._state = RegistryState()

    @property
    def state(self) -> RegistryState:
        return self._state

    async def sync(self) -> None:
        return None

    async def execute(self, plan: Callable[[RegistryState], Outcome[T]]) -> T:
        outcome = plan(self._state)  # synchronous: no other write can interleave
        for record in outcome.records:
            self._state.apply(record)
        return outcome.result
