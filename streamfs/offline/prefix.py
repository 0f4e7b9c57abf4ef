"""Sawtooth windows as index ranges over sorted events, and prefix sums over them.

Events sorted by ``(entity, event_time, offset)`` get one int64 key each,
``entity * span + rank(event_time)``, so one ``np.searchsorted`` finds, for every
query point at once, where an entity's events at or after a time start
(``side="left"``) or where those through a time end (``side="right"``). The
window ``floor((t - W) / h) * h <= event_time <= t`` (DESIGN §3) of a query is
then the index range ``[lo, hi)``: its count is ``hi - lo``, its last event
``hi - 1``, its first ``lo``, and any invertible aggregate a difference of prefix
sums, ``P[hi] - P[lo]``. Query points are searched in sorted order, where
``np.searchsorted`` walks forward instead of jumping about (ten times faster).

Exactness: counts and integer sums are exact (int64). Float sums are taken
around a per-entity reference, each value minus its entity's mean, so the running
total returns to about zero at every entity boundary and a window's rounding is
relative to its own entity's values, not to every event before it; the window
sum is the centred difference plus ``n * mean``. Sums of squares for the
variance are centred the same way, and a window whose variance the subtraction
cannot give to 1e-11 (a tight window far from its entity's mean) is summed again
directly (:func:`pop_var`). NaN and infinities are counted apart and give the IEEE
result (NaN, or an infinity of one sign), never spreading into other windows.
Integer prefix sums that could pass int64 (beyond 9.2e18) are kept as Python ints:
exact, and a window sum that does not fit its int64 column is refused when the
column is built, never wrapped.

Pure: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

Side = Literal["left", "right"]
I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
Number = TypeVar("Number", bound=np.generic)
_KEY_LIMIT = 2**62  # entity * span + rank stays below this: no int64 overflow anywhere


def window_start(t: I64, window_ms: int, hop_ms: int) -> I64:
    """``floor((t - W) / h) * h``: the sawtooth tail (numpy's ``//`` floors)."""
    return ((t - window_ms) // hop_ms) * hop_ms


@dataclass(frozen=True, slots=True)
class Timeline:
    """Sorted events as keys ``entity * span + rank``: see the module doc.

    ``rank`` is ``time - origin + 1`` (1 .. span - 2) or, when entities times
    milliseconds would not fit in an int64, the rank of the time among the
    distinct event times (``times``). Rank 0 and ``span - 1`` are free for
    queries before and after every event of an entity.
    """

    keys: I64
    span: int
    origin: int
    times: I64 | None = None  # the distinct event times, when ranks are compressed

    @staticmethod
    def build(entities: I64, times: I64, n_entities: int, key_limit: int = _KEY_LIMIT) -> Timeline:
        """The timeline of events sorted by ``(entities, times)``."""
        if len(times) == 0:
            return Timeline(np.zeros(0, np.int64), 2, 0)
        origin, last = int(times.min()), int(times.max())
        span = last - origin + 3
        if (n_entities + 1) * span < key_limit:
            return Timeline(entities * span + (times - (origin - 1)), span, origin)
        distinct = np.unique(times)
        span = len(distinct) + 2
        ranks = np.searchsorted(distinct, times) + 1
        return Timeline(entities * span + ranks, span, origin, distinct)

    def probe(self, entities: I64, times: I64, side: Side) -> I64:
        """Keys to search with ``side``: before (left) or after (right) ``times``' events."""
        if self.times is None:
            ranks = np.clip(times - (self.origin - 1), 0, self.span - 1)
        elif side == "left":
            ranks = np.searchsorted(self.times, times, "left") + 1
        else:
            ranks = np.searchsorted(self.times, times, "right")
        return entities * self.span + ranks

    def find(self, entities: I64, times: I64, side: Side, valid: NDArray[np.bool_]) -> I64:
        """Per query: the index of its entity's first event at/after ``times`` (left) or
        past its events through ``times`` (right); invalid queries get 0 (empty ranges)."""
        keys = self.probe(entities, times, side)
        keys[~valid] = 0  # rank 0 of entity 0: before every event
        return np.searchsorted(self.keys, keys, side).astype(np.int64)

    def subset(self, mask: NDArray[np.bool_]) -> Timeline:
        """The timeline of the events where ``mask`` holds (same ranks, same probes)."""
        return Timeline(self.keys[mask], self.span, self.origin, self.times)

    def entities(self) -> I64:
        return self.keys // self.span


def prefix(values: NDArray[Number]) -> NDArray[Number]:
    """``P`` with ``P[i]`` the sum of ``values[:i]`` (so ``P[hi] - P[lo]`` sums a range).

    Integers whose running total could pass int64 are summed as Python ints (an object
    array) instead of wrapping around."""
    if values.dtype.kind == "i" and len(values):
        largest = max(abs(int(values.max())), abs(int(values.min())))
        if largest * len(values) >= 2**63:
            exact = np.zeros(len(values) + 1, dtype=object)
            exact[1:] = np.cumsum(values.astype(object))
            return exact
    out = np.zeros(len(values) + 1, values.dtype)
    np.cumsum(values, out=out[1:])
    return out


@dataclass(frozen=True, slots=True)
class Runs:
    """The runs of one entity in events sorted by entity: where each starts, its length."""

    starts: I64
    lengths: I64
    entities: I64  # the entity of each run

    @staticmethod
    def of(entities: I64) -> Runs:
        if len(entities) == 0:
            empty = np.zeros(0, np.int64)
            return Runs(empty, empty, empty)
        starts = np.flatnonzero(np.diff(entities, prepend=entities[0] - 1))
        lengths = np.diff(starts, append=len(entities))
        return Runs(starts, lengths, entities[starts])

    def means(self, values: F64, counts: I64 | None = None) -> F64:
        """Each run's mean of ``values`` (``counts``: how many of each run count, if not all)."""
        if len(self.starts) == 0:
            return np.zeros(0, np.float64)
        totals = np.add.reduceat(values, self.starts)
        means: F64 = totals / np.maximum(self.lengths if counts is None else counts, 1)
        return means


@dataclass(frozen=True, slots=True)
class FloatSums:
    """Window sums of float values, centred on each entity's mean (module doc)."""

    centred: F64  # prefix sums of value - its entity's mean (0 for nan and infinities)
    mean: F64  # by entity id
    finite: I64 | None  # prefix count of finite values (None: all are)
    specials: tuple[I64, I64, I64] | None  # prefix counts of nan, +inf, -inf (None: none)

    @staticmethod
    def build(values: F64, runs: Runs, n_entities: int) -> tuple[FloatSums, F64]:
        """The sums, and each value's deviation from its entity's mean (nan/inf kept)."""
        ok = np.isfinite(values)
        finite = specials = counts = None
        clean = values
        if not ok.all():
            specials = (
                prefix(np.isnan(values).astype(np.int64)),
                prefix((values == np.inf).astype(np.int64)),
                prefix((values == -np.inf).astype(np.int64)),
            )
            finite = prefix(ok.astype(np.int64))
            clean = np.where(ok, values, 0.0)
            counts = np.add.reduceat(ok.astype(np.int64), runs.starts) if len(ok) else None
        run_means = runs.means(clean, counts)
        deviation = values - np.repeat(run_means, runs.lengths)
        mean = np.zeros(n_entities, np.float64)
        mean[runs.entities] = run_means
        centred = deviation if finite is None else np.where(ok, deviation, 0.0)
        return FloatSums(prefix(centred), mean, finite, specials), deviation

    def sum(self, lo: I64, hi: I64, entities: I64) -> F64:
        """Per query range ``[lo, hi)`` of an entity: the sum (IEEE rules for nan/inf)."""
        n = hi - lo if self.finite is None else self.finite[hi] - self.finite[lo]
        total: F64 = (self.centred[hi] - self.centred[lo]) + n * self.mean[entities]
        if self.specials is not None:
            nan, pos, neg = (s[hi] - s[lo] for s in self.specials)
            total[pos > 0] = np.inf
            total[neg > 0] = -np.inf
            total[(nan > 0) | ((pos > 0) & (neg > 0))] = np.nan
        return total

    def poisoned(self, lo: I64, hi: I64) -> NDArray[np.bool_]:
        """Ranges holding a nan or an infinity."""
        if self.finite is None:
            return np.zeros(len(lo), np.bool_)
        return (self.finite[hi] - self.finite[lo]) < (hi - lo)


def pop_var(
    sums: FloatSums, squares: FloatSums, values: F64, lo: I64, hi: I64, entities: I64
) -> F64:
    """Population variance per range ``[lo, hi)`` of ``values``: ``(Q - D^2 / n) / n``.

    ``sums`` are of the values (centred, so ``D`` sums the deviations ``d`` from the
    entity's mean), ``squares`` of the ``d^2`` (the deviations :meth:`FloatSums.build`
    returns). The subtraction loses the digits that ``d`` has beyond the window's own
    spread (a tight window far from its entity's mean); where a bound on that loss
    exceeds 1e-11 of the result, the window is summed again directly
    (:func:`exact_var`). One event gives exactly 0, as Welford's does; nan when empty
    or when a nan or infinity is in the range.
    """
    n = hi - lo
    c1, cq = sums.centred, squares.centred
    d = c1[hi] - c1[lo]
    q = squares.sum(lo, hi, entities)
    eps = float(np.finfo(np.float64).eps)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: F64 = np.maximum((q - d * d / n) / n, 0.0)
        # Rounding of each d and d^2, and of the running totals between lo and hi.
        err_q = eps * (3 * np.abs(q) + n * (np.abs(cq[hi]) + np.abs(cq[lo])))
        err_d = eps * (np.abs(d) + n * (np.abs(c1[hi]) + np.abs(c1[lo])))
        err = 4 * (err_q + 2 * np.abs(d) * err_d / n) / n
    poisoned = sums.poisoned(lo, hi)
    redo = np.flatnonzero((n > 1) & ~poisoned & ~(err <= 1e-11 * out))
    if len(redo):
        out[redo] = exact_var(values, lo[redo], hi[redo])
    out[n == 1] = 0.0
    out[(n == 0) | poisoned] = np.nan
    return out


def exact_var(values: F64, lo: I64, hi: I64, batch: int = 1 << 22) -> F64:
    """Population variance of each ``values[lo:hi]`` (non-empty), two passes over its values.

    Deviations are taken from the window's first value, then from their mean, so a
    window of one repeated value is exactly 0. ``batch`` bounds the values gathered at once.
    """
    out = np.empty(len(lo), np.float64)
    lengths = hi - lo
    ends = np.cumsum(lengths)
    first = 0
    while first < len(lo):
        base = int(ends[first] - lengths[first])
        last = max(first + 1, int(np.searchsorted(ends, base + batch, "right")))
        n, start = lengths[first:last], lo[first:last]
        offsets = np.cumsum(n) - n
        where = np.arange(int(n.sum())) + np.repeat(start - offsets, n)
        shifted = values[where] - np.repeat(values[start], n)
        mean = np.add.reduceat(shifted, offsets) / n
        deviation = shifted - np.repeat(mean, n)
        out[first:last] = np.add.reduceat(deviation * deviation, offsets) / n
        first = last
    return out
