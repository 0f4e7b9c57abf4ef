"""min and max over sawtooth windows, from events sorted by ``(entity, time, offset)``.

The tail of a window, ``floor((t - W) / h) * h``, is a multiple of the hop, so the
window ``[start, t]`` is a run of whole hop buckets, ``[start, floor(t / h) * h)``,
and the part of ``t``'s own bucket up to ``t``. Events are grouped by
``(entity, bucket)``:

- a sparse table over the groups' extremes answers the whole buckets (the extreme
  of groups ``[a, b)`` is that of two overlapping power-of-two runs), with only as
  many levels as the longest run any query asks for;
- a running extreme inside each group (a segmented scan) answers the last, partial
  bucket: its value at the query's last event.

Index ranges come from :class:`streamfs.offline.prefix.Timeline`: ``lo`` (first
event at/after the tail), ``mid`` (first at/after ``t``'s bucket) and ``hi`` (past
the events through ``t``). A float ``max`` is NaN if the window holds a NaN, a
float ``min`` ignores NaN unless every value is NaN: DuckDB's order, where NaN is
the largest value.

Pure: numpy only.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

from streamfs.offline.prefix import I64

Number = TypeVar("Number", np.int64, np.float64)


def _ufunc(kind: Literal["min", "max"], values: NDArray[Number]) -> np.ufunc:
    if kind == "max":
        return np.maximum
    return np.fmin if values.dtype.kind == "f" else np.minimum


def ranges(values: NDArray[Number], lo: I64, hi: I64, ufunc: np.ufunc) -> NDArray[Number]:
    """``ufunc`` over each ``values[lo[i]:hi[i]]`` (non-empty ranges, in increasing order).

    One ``reduceat`` over the interleaved ends: it also reduces the gaps between
    ranges, so the cost is the ranges' lengths plus at most ``len(values)``.
    """
    ends = np.empty(2 * len(lo), np.int64)
    ends[0::2], ends[1::2] = lo, hi
    padded = np.append(values, values[:1])  # so an end may be len(values)
    out: NDArray[Number] = ufunc.reduceat(padded, ends)[0::2]
    return out


def running(
    values: NDArray[Number], starts: NDArray[np.bool_], ufunc: np.ufunc, longest: int
) -> NDArray[Number]:
    """The extreme of each event's group up to it; ``starts`` marks each group's first event.

    A segmented Hillis-Steele scan: after the pass with step ``s`` each event holds the
    extreme of up to ``2s`` events ending at it, within its group; ``log2`` of the
    ``longest`` group passes.
    """
    out = values.copy()
    group = np.cumsum(starts)
    step = 1
    while step < longest:
        shifted = np.where(group[step:] == group[:-step], out[:-step], out[step:])
        ufunc(out[step:], shifted, out=out[step:])
        step *= 2
    return out


def window_extreme(
    kind: Literal["min", "max"],
    values: NDArray[Number],
    entities: I64,
    times: I64,
    hop_ms: int,
    bounds: tuple[I64, I64, I64],
    direct: bool | None = None,
) -> tuple[NDArray[Number], NDArray[np.bool_]]:
    """Per query, the extreme of ``values[lo:hi]`` and whether that range holds any event.

    ``values``, ``entities`` and ``times`` are the events in ``(entity, time)`` order;
    ``bounds`` the queries' ``(lo, mid, hi)`` (module doc), queries in increasing
    order. Empty ranges get an arbitrary value, marked ``False``. Where the ranges
    are short next to the events, they are reduced directly instead (:func:`ranges`);
    ``direct`` forces that choice (for tests).
    """
    lo, mid, hi = bounds
    ufunc = _ufunc(kind, values)
    n = len(values)
    out = np.zeros_like(values, shape=len(lo))
    if n == 0:
        return out, np.zeros(len(lo), np.bool_)
    bucket = times // hop_ms
    starts = np.ones(n, np.bool_)
    starts[1:] = (entities[1:] != entities[:-1]) | (bucket[1:] != bucket[:-1])
    first = np.flatnonzero(starts)
    whole = mid > lo
    partial = hi > mid
    if whole.any():
        group = np.append(np.cumsum(starts) - 1, len(first))  # index n: past the last group
        a, b = group[lo[whole]], group[mid[whole]]
        level = np.frexp(b - a)[1] - 1  # floor(log2(b - a)), exact for integers
        top = int(level.max())
        short = int((mid - lo)[whole].sum()) <= n * (top + 2)
        if short if direct is None else direct:
            out[whole] = ranges(values, lo[whole], mid[whole], ufunc)
        else:
            # table[j, g]: the extreme of groups g .. g + 2^j - 1 (tails past the end unused)
            table = np.empty_like(values, shape=(top + 1, len(first)))
            table[0] = ufunc.reduceat(values, first)
            for j in range(1, top + 1):
                half = 1 << (j - 1)
                table[j] = table[j - 1]
                ufunc(table[j - 1, :-half], table[j - 1, half:], out=table[j, :-half])
            out[whole] = ufunc(table[level, a], table[level, b - (1 << level)])
    if partial.any():
        longest = int(np.diff(np.append(first, n)).max())
        passes = max(1, longest.bit_length())
        short = int((hi - mid)[partial].sum()) <= n * passes
        if short if direct is None else direct:
            inside = ranges(values, mid[partial], hi[partial], ufunc)
        else:
            inside = running(values, starts, ufunc, longest)[hi[partial] - 1]
        out[partial] = np.where(whole[partial], ufunc(out[partial], inside), inside)
    return out, whole | partial
