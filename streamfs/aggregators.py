"""Mergeable partial aggregates: the functions of DESIGN §3, one small class each.

Every aggregator keeps a *state* and speaks four steps::

    initial() -> state            the state of no events
    add(state, value) -> state    fold one event's value in
    merge(a, b) -> state          combine two partials (per-hop tiles) without raw events
    result(state) -> value        the feature value; the empty value for initial()

plus ``encode(state) -> bytes`` / ``decode(bytes) -> state`` for RocksDB and Redis
(:mod:`streamfs.statecodec`: leading version byte, then struct-packed fields).

Contracts the tile store and both engines rely on:

- ``merge`` is associative and commutative, so tiles combine in any grouping and
  order. For float inputs ``sum``, ``mean``, ``variance`` and ``stddev`` are so up
  to rounding (a few ulps; int inputs are exact); every other function is so exactly.
- ``add`` returns the new state and *may* update ``state`` in place (the sketches
  and the distinct set do), so a caller keeps the returned value and never shares
  one state between two tiles. ``merge`` never modifies its arguments.
- ``initial()`` returns a fresh state each call.
- Values are never ``None``: a null field is skipped before ``add`` (SQL semantics,
  as DuckDB's aggregates do offline).
- Empty window: ``count`` 0, ``sum`` 0, ``count_distinct`` 0 (a count, as SQL), every
  other function ``None``.

``variance`` and ``stddev`` are the population forms (DuckDB ``var_pop``), kept as
Welford ``(n, mean, M2)`` and merged with Chan's formula: accurate for values
around 1e9 with a spread of 1, where sum-of-squares subtraction loses every digit.

``first`` and ``last`` are ordered by ``(event_time_ms, seq, value)``: ``seq`` is
the event's Kafka offset (an entity's events share one partition), so two events
with one timestamp resolve the same way online and offline (Parquet keeps the
offset; DuckDB: ``arg_max(v, (event_time, offset))``). Their ``ordered`` flag tells
the tile store to pass ``(event_time_ms, seq, value)`` instead of the bare value.

The sketches come from Apache DataSketches (PyPI ``datasketches``): well tested,
mergeable, with documented error bounds and a portable binary format, rather than
hand-written ones. See :mod:`streamfs.sketches`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final, Protocol, TypeVar, cast

from streamfs import statecodec as sc
from streamfs.sketches import CountDistinct, Percentile
from streamfs.statecodec import Scalar, StateDecodeError

S = TypeVar("S")
V_contra = TypeVar("V_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)

Number = int | float
Stamped = tuple[int, int, Scalar]
"""``(event_time_ms, seq, value)``: what ordered aggregators (first, last) take."""


class Aggregator(Protocol[S, V_contra, R_co]):
    """A mergeable partial aggregate (see the module docstring for the contract)."""

    @property
    def ordered(self) -> bool:
        """Whether ``add`` takes :data:`Stamped` values instead of bare ones."""
        ...

    def initial(self) -> S: ...

    def add(self, state: S, value: V_contra) -> S: ...

    def merge(self, a: S, b: S) -> S: ...

    def result(self, state: S) -> R_co: ...

    def encode(self, state: S) -> bytes: ...

    def decode(self, data: bytes) -> S: ...


@dataclass(frozen=True, slots=True)
class Count:
    """Number of events (with a non-null input). Empty: 0."""

    @property
    def ordered(self) -> bool:
        return False

    def initial(self) -> int:
        return 0

    def add(self, state: int, value: object) -> int:
        return state + 1

    def merge(self, a: int, b: int) -> int:
        return a + b

    def merge_all(self, states: Sequence[int]) -> int:
        return sum(states)

    def result(self, state: int) -> int:
        return state

    def encode(self, state: int) -> bytes:
        return sc.encode_versioned_u64(state)

    def decode(self, data: bytes) -> int:
        if (fast := sc.unpack_versioned_u64(data)) is not None:
            return fast
        count, end = sc.decode_u64(data, sc.check_version(data, "count"))
        sc.check_done(data, end, "count")
        return count


@dataclass(frozen=True, slots=True)
class Sum:
    """Sum of the values; ints stay exact ints. Empty: 0."""

    @property
    def ordered(self) -> bool:
        return False

    def initial(self) -> Number:
        return 0

    def add(self, state: Number, value: Number) -> Number:
        return state + value

    def merge(self, a: Number, b: Number) -> Number:
        return a + b

    def merge_all(self, states: Sequence[Number]) -> Number:
        # From 0, left to right: the very additions of folding merge (not ``sum``, which
        # compensates float rounding from Python 3.12 on). A loop, not ``reduce``: compiled,
        # each addition is one C call, not a call through ``operator.add``.
        total: Number = 0  # typed: a compiled build would take 0's type for the result
        for state in states:
            total = total + state
        return total

    def result(self, state: Number) -> Number:
        return state

    def encode(self, state: Number) -> bytes:
        return sc.encode_versioned_number(state)

    def decode(self, data: bytes) -> Number:
        if (fast := sc.unpack_versioned_number(data)) is not None:
            return fast
        total, end = sc.decode_number(data, sc.check_version(data, "sum"))
        sc.check_done(data, end, "sum")
        return total


MeanState = tuple[int, Number]
"""``(count, total)``."""


def mean_add(state: MeanState, value: Number) -> MeanState:
    """:meth:`Mean.add` (a function: :mod:`streamfs.tiles` calls it directly per event)."""
    return (state[0] + 1, state[1] + value)


@dataclass(frozen=True, slots=True)
class Mean:
    """Arithmetic mean as ``total / count`` (float). Empty: None."""

    @property
    def ordered(self) -> bool:
        return False

    def initial(self) -> MeanState:
        return (0, 0)

    def add(self, state: MeanState, value: Number) -> MeanState:
        return mean_add(state, value)

    def merge(self, a: MeanState, b: MeanState) -> MeanState:
        return (a[0] + b[0], a[1] + b[1])

    def merge_all(self, states: Sequence[MeanState]) -> MeanState:
        # Folding merge from initial(): the same additions, in the same order.
        count = 0
        total: Number = 0
        for n, subtotal in states:
            count += n
            total = total + subtotal
        return (count, total)

    def result(self, state: MeanState) -> float | None:
        return state[1] / state[0] if state[0] else None

    def encode(self, state: MeanState) -> bytes:
        return sc.encode_versioned_count_number(state[0], state[1])

    def decode(self, data: bytes) -> MeanState:
        if (fast := sc.unpack_versioned_count_number(data)) is not None:
            return fast
        count, offset = sc.decode_u64(data, sc.check_version(data, "mean"))
        total, end = sc.decode_number(data, offset)
        sc.check_done(data, end, "mean")
        return (count, total)


VarState = tuple[int, float, float]
"""Welford's ``(n, mean, M2)``, where ``M2`` is the sum of squared deviations."""


def welford_add(state: VarState, value: Number) -> VarState:
    """:meth:`Variance.add`, Welford's update (a function: :mod:`streamfs.tiles` calls it
    directly per event)."""
    n, mean, m2 = state
    n += 1
    delta = value - mean
    mean += delta / n
    return (n, mean, m2 + delta * (value - mean))


def chan_merge(a: VarState, b: VarState) -> VarState:
    """:meth:`Variance.merge`, Chan's formula (a function: ``merge_all`` calls it directly)."""
    na, mean_a, m2a = a
    nb, mean_b, m2b = b
    if not nb:
        return a
    if not na:
        return b
    n = na + nb
    delta = mean_b - mean_a
    # Weighted by the larger side so the mean stays put when one side is tiny.
    mean = mean_a + delta * (nb / n) if na >= nb else mean_b - delta * (na / n)
    return (n, mean, m2a + m2b + delta * delta * (na * nb / n))


@dataclass(frozen=True, slots=True)
class Variance:
    """Population variance (``M2 / n``), Welford adds and Chan merges. Empty: None."""

    @property
    def ordered(self) -> bool:
        return False

    def initial(self) -> VarState:
        return (0, 0.0, 0.0)

    def add(self, state: VarState, value: Number) -> VarState:
        return welford_add(state, value)

    def merge(self, a: VarState, b: VarState) -> VarState:
        return chan_merge(a, b)

    def merge_all(self, states: Sequence[VarState]) -> VarState:
        merged: VarState = (0, 0.0, 0.0)
        for state in states:
            merged = chan_merge(merged, state)
        return merged

    def result(self, state: VarState) -> float | None:
        n, _, m2 = state
        return max(m2, 0.0) / n if n else None

    def encode(self, state: VarState) -> bytes:
        n, mean, m2 = state
        return sc.encode_versioned_u64_f64_f64(n, mean, m2)

    def decode(self, data: bytes) -> VarState:
        if (fast := sc.unpack_versioned_u64_f64_f64(data)) is not None:
            return fast
        n, offset = sc.decode_u64(data, sc.check_version(data, "variance"))
        mean, offset = sc.decode_f64(data, offset)
        m2, end = sc.decode_f64(data, offset)
        sc.check_done(data, end, "variance")
        return (n, mean, m2)


_VARIANCE: Final = Variance()


@dataclass(frozen=True, slots=True)
class Stddev(Variance):
    """Population standard deviation: the square root of :class:`Variance`. Empty: None.

    The same state, adds, merges and bytes as :class:`Variance` (inherited, so the
    per-event add is one call); only the result differs.
    """

    def result(self, state: VarState) -> float | None:
        variance = _VARIANCE.result(state)
        return None if variance is None else math.sqrt(variance)


@dataclass(frozen=True, slots=True)
class Min:
    """Smallest value. Empty: None."""

    @property
    def ordered(self) -> bool:
        return False

    def initial(self) -> Scalar | None:
        return None

    def add(self, state: Scalar | None, value: Scalar) -> Scalar | None:
        return value if state is None or value < state else state  # type: ignore[operator]  # one field, one type

    def merge(self, a: Scalar | None, b: Scalar | None) -> Scalar | None:
        return a if b is None else self.add(a, b)

    def result(self, state: Scalar | None) -> Scalar | None:
        return state

    def encode(self, state: Scalar | None) -> bytes:
        return sc.VERSION_BYTE + sc.encode_scalar(state)

    def decode(self, data: bytes) -> Scalar | None:
        value, end = sc.decode_scalar(data, sc.check_version(data, "min"))
        sc.check_done(data, end, "min")
        return value


@dataclass(frozen=True, slots=True)
class Max:
    """Largest value. Empty: None."""

    @property
    def ordered(self) -> bool:
        return False

    def initial(self) -> Scalar | None:
        return None

    def add(self, state: Scalar | None, value: Scalar) -> Scalar | None:
        return value if state is None or value > state else state  # type: ignore[operator]  # one field, one type

    def merge(self, a: Scalar | None, b: Scalar | None) -> Scalar | None:
        return a if b is None else self.add(a, b)

    def result(self, state: Scalar | None) -> Scalar | None:
        return state

    def encode(self, state: Scalar | None) -> bytes:
        return sc.VERSION_BYTE + sc.encode_scalar(state)

    def decode(self, data: bytes) -> Scalar | None:
        value, end = sc.decode_scalar(data, sc.check_version(data, "max"))
        sc.check_done(data, end, "max")
        return value


def _encode_stamped(state: Stamped | None) -> bytes:
    if state is None:
        return sc.VERSION_BYTE + b"N"
    time_ms, seq, value = state
    return (
        sc.VERSION_BYTE
        + b"S"
        + sc.encode_i64(time_ms)
        + sc.encode_i64(seq)
        + sc.encode_scalar(value)
    )


def _decode_stamped(data: bytes, what: str) -> Stamped | None:
    offset = sc.check_version(data, what)
    tag = data[offset : offset + 1]
    if tag == b"N":
        sc.check_done(data, offset + 1, what)
        return None
    if tag != b"S":
        raise StateDecodeError(f"{what} state: unknown tag {tag!r}")
    time_ms, offset = sc.decode_i64(data, offset + 1)
    seq, offset = sc.decode_i64(data, offset)
    value, end = sc.decode_scalar(data, offset)
    sc.check_done(data, end, what)
    if value is None:
        raise StateDecodeError(f"{what} state holds a null value")
    return (time_ms, seq, value)


class _OneEvent:
    """First and Last: the state is ``(event_time_ms, seq, value)`` of the one event kept.

    ``(time, seq)`` identifies an event, so an event seen twice keeps the same state.
    """

    __slots__ = ()

    @property
    def ordered(self) -> bool:
        return True

    @property
    def name(self) -> str:
        raise NotImplementedError

    def wins(self, value: Stamped, state: Stamped) -> bool:
        raise NotImplementedError

    def initial(self) -> Stamped | None:
        return None

    def add(self, state: Stamped | None, value: Stamped) -> Stamped | None:
        return value if state is None or self.wins(value, state) else state

    def merge(self, a: Stamped | None, b: Stamped | None) -> Stamped | None:
        return a if b is None else self.add(a, b)

    def result(self, state: Stamped | None) -> Scalar | None:
        return None if state is None else state[2]

    def encode(self, state: Stamped | None) -> bytes:
        return _encode_stamped(state)

    def decode(self, data: bytes) -> Stamped | None:
        return _decode_stamped(data, self.name)


@dataclass(frozen=True, slots=True)
class First(_OneEvent):
    """Value of the earliest event by ``(event_time_ms, seq)``. Empty: None."""

    @property
    def name(self) -> str:
        return "first"

    def wins(self, value: Stamped, state: Stamped) -> bool:
        return value[0] < state[0] or (value[0] == state[0] and value[1] < state[1])


@dataclass(frozen=True, slots=True)
class Last(_OneEvent):
    """Value of the latest event by ``(event_time_ms, seq)``. Empty: None."""

    @property
    def name(self) -> str:
        return "last"

    def wins(self, value: Stamped, state: Stamped) -> bool:
        return value[0] > state[0] or (value[0] == state[0] and value[1] > state[1])


AnyAggregator = Aggregator[Any, Any, Any]


def merger(aggregator: AnyAggregator) -> Callable[[Sequence[Any]], Any]:
    """A function merging a list of states, the same as folding ``merge`` over them from
    ``initial()``: the aggregator's own ``merge_all`` where it has a faster one (one
    builtin ``sum``; one sketch copy instead of one per merge)."""
    fast = getattr(aggregator, "merge_all", None)
    if fast is not None:
        return cast(Callable[[Sequence[Any]], Any], fast)
    merge, initial = aggregator.merge, aggregator.initial

    def fold(states: Sequence[Any]) -> Any:
        merged = initial()
        for state in states:
            merged = merge(merged, state)
        return merged

    return fold


AGGREGATORS: dict[str, Callable[[], AnyAggregator]] = {
    "count": Count,
    "sum": Sum,
    "mean": Mean,
    "min": Min,
    "max": Max,
    "variance": Variance,
    "stddev": Stddev,
    "first": First,
    "last": Last,
    "count_distinct": CountDistinct,
    "percentile": Percentile,
}
"""Aggregators by function name; ``percentile`` is the median, see :func:`make`."""

_PERCENTILE: Final = re.compile(r"p(\d{1,2}(?:\.\d+)?|100)")


def make(function: str) -> AnyAggregator:
    """The aggregator for a function name: a key of :data:`AGGREGATORS` or ``p<N>``.

    ``p95`` is the 95th percentile, ``p99.9`` the 99.9th, ``p50`` the median.
    """
    factory = AGGREGATORS.get(function)
    if factory is not None:
        return factory()
    match = _PERCENTILE.fullmatch(function)
    if match:
        return Percentile(float(Fraction(match.group(1)) / 100))
    known = ", ".join([*AGGREGATORS, "p<N>"])
    raise ValueError(f"unknown aggregation function {function!r}; known: {known}")


_checks: tuple[AnyAggregator, ...] = (
    Count(), Sum(), Mean(), Min(), Max(), Variance(), Stddev(), First(), Last(),
    CountDistinct(), Percentile(),
)  # fmt: skip
"""Every aggregator, typed as the protocol: mypy proves each one conforms."""

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "AnyAggregator",
    "Count",
    "CountDistinct",
    "First",
    "Last",
    "Max",
    "Mean",
    "Min",
    "Percentile",
    "Stamped",
    "StateDecodeError",
    "Stddev",
    "Sum",
    "Variance",
    "make",
]
