"""Per-entity tile stores: partial aggregates per hop, merged into sawtooth windows on query.

:class:`Tiles` is one entity's store for one aggregation: ``tile index -> state``.
:class:`EntityTiles` is what the worker keeps per entity and source: the tiles of
*all* the source's aggregations, updated in one pass per event. Aggregations with
the same hop share one ``tile index -> row`` dict (a row is a list of states, one
per aggregation), so an event costs one dict lookup per distinct hop, not per
aggregation, and no allocation unless it opens a tile.

Both answer ``query(t)`` for ``as_of = max(t, last_event_time_ms)``: the head-tile
rule of :mod:`streamfs.windows`, which makes a merge of tiles equal a brute-force
scan of the raw events. A store never reads a clock; ``evict(now_ms)`` is given one.

Neither is thread-safe; the worker owns each entity's store while it updates it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from streamfs import statecodec as sc
from streamfs.aggregators import (
    AnyAggregator,
    Count,
    Mean,
    Stddev,
    Sum,
    Variance,
    mean_add,
    merger,
    welford_add,
)
from streamfs.statecodec import StateDecodeError
from streamfs.windows import WindowSpec, as_of_ms


@dataclass(frozen=True, slots=True)
class Feature:
    """One aggregation of a source: its output name, function and window."""

    name: str
    aggregator: AnyAggregator
    window: WindowSpec


def _merge_window(
    aggregator: AnyAggregator, states: Iterable[tuple[int, Any]], lo: int, hi: int
) -> Any:
    merge = aggregator.merge
    merged = aggregator.initial()
    for index, state in states:
        if lo <= index <= hi:
            merged = merge(merged, state)
    return merged


class Tiles:
    """One entity's tiles for one aggregation (the simple form of :class:`EntityTiles`)."""

    __slots__ = ("aggregator", "hop_ms", "last_event_time_ms", "states", "window_ms")

    def __init__(self, aggregator: AnyAggregator, window: WindowSpec) -> None:
        self.aggregator = aggregator
        self.window_ms = window.window_ms
        self.hop_ms = window.hop_ms
        self.states: dict[int, Any] = {}
        self.last_event_time_ms: int | None = None

    def add_event(self, event_time_ms: int, value: Any, seq: int = 0) -> None:
        """Fold one event in; ``None`` values are skipped (but still advance the last time)."""
        last = self.last_event_time_ms
        if last is None or event_time_ms > last:
            self.last_event_time_ms = event_time_ms
        if value is None:
            return
        aggregator = self.aggregator
        index = event_time_ms // self.hop_ms
        state = self.states.get(index)
        if state is None:
            state = aggregator.initial()
        if aggregator.ordered:
            value = (event_time_ms, seq, value)
        self.states[index] = aggregator.add(state, value)

    def evict(self, now_ms: int) -> int:
        """Drop the tiles no query at ``t >= now_ms`` reads; returns how many went."""
        oldest = (now_ms - self.window_ms) // self.hop_ms
        stale = [index for index in self.states if index < oldest]
        for index in stale:
            del self.states[index]
        return len(stale)

    def query_state(self, t_ms: int) -> Any:
        """The merged partial state of the window at ``as_of_ms(t_ms)``."""
        t_ms = as_of_ms(t_ms, self.last_event_time_ms)
        lo, hi = (t_ms - self.window_ms) // self.hop_ms, t_ms // self.hop_ms
        return _merge_window(self.aggregator, self.states.items(), lo, hi)

    def query(self, t_ms: int) -> Any:
        """The feature value for the window at ``as_of_ms(t_ms)`` (empty value if none)."""
        return self.aggregator.result(self.query_state(t_ms))


Reader = tuple[int, str, Callable[[Sequence[Any]], Any], Callable[[Any], Any]]
"""A feature as a query reads it: (slot, name, merge a list of states, result)."""


@dataclass(frozen=True, slots=True)
class Group:
    """The features sharing one hop, hence one ``tile index -> row`` dict per entity.

    ``members`` are feature indexes in row order; ``horizon_ms`` the widest window
    (what eviction keeps). ``plain`` (``(slot, feature index, kind, add)``) and
    ``ordered`` (``(slot, feature index, add)``) are for the per-event path, split so
    it never tests a flag; ``kinds`` names each slot's aggregator when it is one of
    the few the row's hot paths fold and encode inline (see :func:`_kind`); ``lead``
    of them come first in the row, and ``lead_packer`` packs the row's index and their
    states at once when their totals are floats (:meth:`encode_row`). ``template`` is a row
    of initial states that are immutable (ints, tuples, None) and can be copied;
    ``fresh`` lists the slots whose initial state is mutable (sets, sketches) and
    must be made anew for each tile.
    """

    hop_ms: int
    horizon_ms: int
    members: tuple[int, ...]
    plain: tuple[tuple[int, int, int, Callable[[Any, Any], Any]], ...]
    ordered: tuple[tuple[int, int, Callable[[Any, Any], Any]], ...]
    template: tuple[Any, ...]
    fresh: tuple[tuple[int, Callable[[], Any]], ...]
    kinds: tuple[int, ...]
    lead: int
    lead_packer: struct.Struct | None
    lead_heads: struct.Struct | None  # the lead states' lengths, versions and tags only
    lead_heads_expected: tuple[Any, ...]  # ... as a float total (or a count) has them
    lead_numbers: struct.Struct | None  # the lead states' numbers only
    lead_widths: tuple[int, ...]  # per lead slot, how many numbers its state is (1: a scalar)
    lead_lengths: struct.Struct | None  # only their lengths, where a float total has them
    lead_expected: tuple[int, ...]  # ... which are these
    encoders: tuple[Callable[[Any], bytes], ...]  # per slot: its aggregator's encode
    decoders: tuple[Callable[[bytes], Any], ...]  # per slot: its aggregator's decode
    decoders_after_lead: tuple[Callable[[bytes], Any], ...]  # decoders[lead:]
    # For queries, per distinct window (widest first): its length in ms and its readers.
    windows: tuple[tuple[int, tuple[Reader, ...]], ...]

    def new_row(self) -> list[Any]:
        row = list(self.template)
        for slot, initial in self.fresh:
            row[slot] = initial()
        return row

    def encode_row(self, index: int, row: list[Any]) -> bytes:
        """A row's bytes: its int64 index, then each state after its uint32 length."""
        lead, packer = self.lead, self.lead_packer
        start = 0
        parts: list[bytes] = []
        if packer is not None:
            args: list[Any] = [index]
            for slot in range(lead):
                kind, state = self.kinds[slot], row[slot]
                if kind == _WELFORD:
                    n, mean, m2 = state
                    args.append(_HEAD_WELFORD)
                    args.append(n)
                    args.append(mean)
                    args.append(m2)
                elif kind == _MEAN:
                    count, total = state
                    if type(total) is not float:
                        break
                    args.append(_HEAD_MEAN)
                    args.append(count)
                    args.append(b"f")
                    args.append(total)
                elif kind == _SUM:
                    if type(state) is not float:
                        break
                    args.append(_HEAD_SUM_FLOAT)
                    args.append(state)
                else:
                    args.append(_HEAD_COUNT)
                    args.append(state)
            else:
                if lead == len(row):
                    return packer.pack(*args)
                parts.append(packer.pack(*args))
                start = lead
        if not parts:
            parts.append(_I64.pack(index))
        encoders = self.encoders
        for slot in range(start, len(row)):
            parts.append(sc.frame(encoders[slot](row[slot])))
        return b"".join(parts)

    def decode_row(self, chunk: bytes) -> list[Any]:
        """The states of a row :meth:`EntityTiles.encode` wrote (``chunk`` starts with its
        index), its bounds checked when the entity was decoded."""
        row: list[Any] = []
        offset = 8
        decoders = self.decoders
        heads = self.lead_heads
        if (
            heads is not None
            and len(chunk) >= 8 + heads.size
            and heads.unpack_from(chunk, 8) == self.lead_heads_expected
        ):
            # Every lead state as a float total (or a count) has it: their numbers in one
            # read, a scalar or a tuple each (the heads compared at once, in C).
            assert self.lead_numbers is not None  # built with lead_heads
            numbers = self.lead_numbers.unpack_from(chunk, 8)
            k = 0
            for width in self.lead_widths:
                if width == 1:
                    row.append(numbers[k])
                else:
                    row.append(numbers[k : k + width])
                k += width
            offset += heads.size
            decoders = self.decoders_after_lead
        for decode in decoders:
            (size,) = _U32.unpack_from(chunk, offset)
            offset += 4
            row.append(decode(chunk[offset : offset + size]))
            offset += size
        return row


_IMMUTABLE: Final = (int, float, str, tuple, type(None))
_I64: Final = struct.Struct("<q")
_U64: Final = struct.Struct("<Q")
_U32: Final = struct.Struct("<I")


# The aggregators whose add and encode the per-event paths do inline (no call through
# a bound method per state). Same results and bytes as the aggregators' own methods
# (tests/test_tiles.py checks both); any other aggregator is called.
_CALL: Final = 0
_COUNT: Final = 1
_SUM: Final = 2
_MEAN: Final = 3
_WELFORD: Final = 4  # variance and stddev: one state


# What a state's bytes start with in a row, per inline kind: its uint32 length, the
# version and (for a float sum) the number's tag, as the aggregators' encode writes them.
_HEAD_COUNT: Final = sc.frame(sc.encode_versioned_u64(0))[:5]
_HEAD_SUM_FLOAT: Final = sc.frame(sc.encode_versioned_number(0.0))[:6]
_HEAD_MEAN: Final = sc.frame(sc.encode_versioned_count_number(0, 0.0))[:5]
_HEAD_WELFORD: Final = sc.frame(sc.encode_versioned_u64_f64_f64(0, 0.0, 0.0))[:5]
_LEAD_FORMATS: Final = {_COUNT: "5sQ", _SUM: "6sd", _MEAN: "5sQcd", _WELFORD: "5sQdd"}
# A lead state read in two parts: its head (uint32 length, version byte and, for a sum or
# mean, the total's tag), its numbers skipped; and its numbers, its head skipped.
_LEAD_HEAD_FORMATS: Final = {_COUNT: "IB8x", _SUM: "IBc8x", _MEAN: "IB8xc8x", _WELFORD: "IB24x"}
_LEAD_NUMBER_FORMATS: Final = {_COUNT: "5xQ", _SUM: "6xd", _MEAN: "5xQxd", _WELFORD: "5xQdd"}
_LEAD_WIDTHS: Final = {_COUNT: 1, _SUM: 1, _MEAN: 2, _WELFORD: 3}
_LEAD_SIZES: Final = {_COUNT: 9, _SUM: 10, _MEAN: 18, _WELFORD: 25}  # an int64 total's too
_LEAD_LENGTHS: Final = {kind: f"I{size}x" for kind, size in _LEAD_SIZES.items()}
_LEAD_HEADS: Final[dict[int, tuple[Any, ...]]] = {
    _COUNT: (_LEAD_SIZES[_COUNT], sc.VERSION),
    _SUM: (_LEAD_SIZES[_SUM], sc.VERSION, b"f"),
    _MEAN: (_LEAD_SIZES[_MEAN], sc.VERSION, b"f"),
    _WELFORD: (_LEAD_SIZES[_WELFORD], sc.VERSION),
}


def _lead_struct(kinds: Sequence[int], head: str, formats: dict[int, str]) -> struct.Struct | None:
    """One ``Struct`` for a row's leading inline states (``head`` before them)."""
    if not kinds:
        return None
    return struct.Struct("<" + head + "".join(formats[kind] for kind in kinds))


def _kind(aggregator: AnyAggregator) -> int:
    kind = type(aggregator)
    if kind is Count:
        return _COUNT
    if kind is Sum:
        return _SUM
    if kind is Mean:
        return _MEAN
    if kind is Variance or kind is Stddev:
        return _WELFORD
    return _CALL


@dataclass(frozen=True, slots=True)
class Layout:
    """How a source's features map onto per-hop tile rows; built once per source."""

    features: tuple[Feature, ...]
    groups: tuple[Group, ...]
    names: tuple[str, ...]  # the features by group, the order of ``EntityTiles.query``
    # Every name with no value yet, in that order: what a query copies and fills in.
    no_values: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, features: Sequence[Feature]) -> Layout:
        names = [feature.name for feature in features]
        if len(set(names)) != len(names):
            raise ValueError(f"feature names repeat: {names}")
        groups = []
        for hop_ms in sorted({feature.window.hop_ms for feature in features}):
            members = tuple(i for i, f in enumerate(features) if f.window.hop_ms == hop_ms)
            aggregators = [features[i].aggregator for i in members]
            initials = [aggregator.initial() for aggregator in aggregators]
            kinds = tuple(_kind(a) for a in aggregators)
            lead = next((slot for slot, kind in enumerate(kinds) if kind == _CALL), len(kinds))
            groups.append(
                Group(
                    hop_ms=hop_ms,
                    horizon_ms=max(features[i].window.window_ms for i in members),
                    members=members,
                    plain=tuple(
                        (slot, i, kinds[slot], a.add)
                        for slot, (i, a) in enumerate(zip(members, aggregators, strict=True))
                        if not a.ordered
                    ),
                    ordered=tuple(
                        (slot, i, a.add)
                        for slot, (i, a) in enumerate(zip(members, aggregators, strict=True))
                        if a.ordered
                    ),
                    template=tuple(s if isinstance(s, _IMMUTABLE) else None for s in initials),
                    fresh=tuple(
                        (slot, a.initial)
                        for slot, (a, s) in enumerate(zip(aggregators, initials, strict=True))
                        if not isinstance(s, _IMMUTABLE)
                    ),
                    kinds=kinds,
                    lead=lead,
                    lead_packer=_lead_struct(kinds[:lead], "q", _LEAD_FORMATS),
                    lead_heads=_lead_struct(kinds[:lead], "", _LEAD_HEAD_FORMATS),
                    lead_heads_expected=tuple(
                        part for kind in kinds[:lead] for part in _LEAD_HEADS[kind]
                    ),
                    lead_numbers=_lead_struct(kinds[:lead], "", _LEAD_NUMBER_FORMATS),
                    lead_widths=tuple(_LEAD_WIDTHS[kind] for kind in kinds[:lead]),
                    lead_lengths=_lead_struct(kinds[:lead], "", _LEAD_LENGTHS),
                    lead_expected=tuple(_LEAD_SIZES[kind] for kind in kinds[:lead]),
                    encoders=tuple(a.encode for a in aggregators),
                    decoders=tuple(a.decode for a in aggregators),
                    decoders_after_lead=tuple(a.decode for a in aggregators[lead:]),
                    windows=tuple(
                        (
                            window_ms,
                            tuple(
                                (slot, features[i].name, merger(a), a.result)
                                for slot, (i, a) in enumerate(
                                    zip(members, aggregators, strict=True)
                                )
                                if features[i].window.window_ms == window_ms
                            ),
                        )
                        for window_ms in sorted(
                            {features[i].window.window_ms for i in members}, reverse=True
                        )
                    ),
                )
            )
        order = tuple(features[i].name for group in groups for i in group.members)
        return cls(tuple(features), tuple(groups), order, dict.fromkeys(order))


class EntityTiles:
    """One entity's tiles for every feature of one source, updated in one pass per event."""

    __slots__ = ("encoded", "groups", "last_event_time_ms", "layout")

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        # Per group, tile index -> row; ``None``: a decoded store's row that nothing read
        # yet, decoded from ``encoded`` when an event falls into it or a query reads it.
        self.groups: list[dict[int, list[Any] | None]] = [{} for _ in layout.groups]
        # Per group, the encoded bytes of the rows no event touched since they were last
        # encoded or decoded: a batch re-encodes only the tiles its events fell into.
        self.encoded: list[dict[int, bytes]] = [{} for _ in layout.groups]
        self.last_event_time_ms: int | None = None

    def add_event(self, event_time_ms: int, values: Sequence[Any], seq: int = 0) -> None:
        """Fold one event in: ``values[i]`` is feature ``i``'s input, ``None`` to skip it.

        ``seq`` orders events with equal times for first/last: the Kafka offset.
        """
        # A list (what compiled views give) is indexed directly in a compiled build.
        inputs: list[Any] = values if isinstance(values, list) else list(values)
        last = self.last_event_time_ms
        if last is None or event_time_ms > last:
            self.last_event_time_ms = event_time_ms
        for group, rows, encoded in zip(self.layout.groups, self.groups, self.encoded):  # noqa: B905  # hot path
            index = event_time_ms // group.hop_ms
            row = rows.get(index)
            if row is None:
                chunk = encoded.pop(index, None)
                row = rows[index] = group.new_row() if chunk is None else group.decode_row(chunk)
            elif index in encoded:
                del encoded[index]
            for slot, i, kind, add in group.plain:
                value = inputs[i]
                if value is not None:
                    if kind == _COUNT:
                        row[slot] += 1
                    elif kind == _SUM:
                        row[slot] += value
                    elif kind == _WELFORD:
                        row[slot] = welford_add(row[slot], value)
                    elif kind == _MEAN:
                        row[slot] = mean_add(row[slot], value)
                    else:
                        row[slot] = add(row[slot], value)
            for slot, i, add in group.ordered:
                value = inputs[i]
                if value is not None:
                    row[slot] = add(row[slot], (event_time_ms, seq, value))

    def add_events(self, events: Iterable[tuple[int, Sequence[Any]]], first_seq: int = 0) -> None:
        """Fold ``(event_time_ms, values)`` pairs in, numbering them from ``first_seq``."""
        add_event = self.add_event
        for seq, (event_time_ms, values) in enumerate(events, first_seq):
            add_event(event_time_ms, values, seq)

    def evict(self, now_ms: int) -> int:
        """Drop the tiles no query at ``t >= now_ms`` reads; returns how many rows went."""
        dropped = 0
        for group, rows, encoded in zip(self.layout.groups, self.groups, self.encoded):  # noqa: B905  # hot path
            oldest = (now_ms - group.horizon_ms) // group.hop_ms
            stale = [index for index in rows if index < oldest]
            for index in stale:
                del rows[index]
                encoded.pop(index, None)
            dropped += len(stale)
        return dropped

    def is_empty(self) -> bool:
        """No tiles left: the worker can delete the entity's key."""
        return not any(self.groups)

    def query(self, t_ms: int) -> dict[str, Any]:
        """Every feature's value for its window at ``as_of_ms(t_ms)``, by name."""
        t_ms = as_of_ms(t_ms, self.last_event_time_ms)
        values: dict[str, Any] = self.layout.no_values.copy()
        self._decode_rows()
        for group, rows in zip(self.layout.groups, self.groups):  # noqa: B905  # hot path
            hop_ms = group.hop_ms
            head = t_ms // hop_ms
            # Widest window first: each narrower one filters the rows of the last.
            window = [(index, row) for index, row in rows.items() if index <= head]
            for window_ms, readers in group.windows:
                lo = (t_ms - window_ms) // hop_ms
                window = [(index, row) for index, row in window if index >= lo]
                rows_in = [row for _, row in window if row is not None]  # all decoded above
                # Per feature, its states in row order (most windows hold a row or two:
                # a short list each is cheaper than one transpose through zip).
                for slot, name, merge_all, result in readers:
                    values[name] = result(merge_all([row[slot] for row in rows_in]))
        return values

    def encode(self) -> bytes:
        """Compact bytes for a RocksDB/Redis value: version, last time, then tiles per hop.

        Layout: ``VERSION``, ``last_event_time_ms`` (scalar, N if none), then per hop
        group a uint64 tile count and per tile its int64 index and one
        uint32-length-prefixed encoded state per member feature. The layout itself
        (features, order) is not stored: the reader must hold the same one, which
        versioned table names guarantee.
        """
        parts = [sc.VERSION_BYTE, sc.encode_scalar(self.last_event_time_ms)]
        for group, rows, encoded in zip(self.layout.groups, self.groups, self.encoded):  # noqa: B905  # hot path
            parts.append(_U64.pack(len(rows)))
            for index, row in rows.items():
                chunk = encoded.get(index)
                if chunk is None:
                    assert row is not None  # a row without bytes was decoded or is new
                    chunk = encoded[index] = group.encode_row(index, row)
                parts.append(chunk)
        return b"".join(parts)

    @classmethod
    def decode(cls, layout: Layout, data: bytes, lazy: bool = False) -> EntityTiles:
        """The store :meth:`encode` wrote, read with the same ``layout``.

        The bytes are checked whole; ``lazy``: each row's states are decoded only when
        an event falls into the row or a query reads it, so a malformed state raises
        there, not here.
        """
        tiles = cls(layout)
        offset = sc.check_version(data, "entity tiles")
        last, offset = sc.decode_scalar(data, offset)
        if last is not None and (isinstance(last, bool) or not isinstance(last, int)):
            raise StateDecodeError(f"entity tiles: last event time {last!r} is not an int")
        tiles.last_event_time_ms = last
        size_of = len(data)
        # One pass, the lengths read inline (not through statecodec's per-field helpers:
        # the offline writer decodes every write's tiles whole to value its snapshots).
        unpack_u32, unpack_i64 = _U32.unpack_from, _I64.unpack_from
        per_group = zip(layout.groups, tiles.groups, tiles.encoded)  # noqa: B905  # hot path
        try:
            for group, rows, encoded in per_group:
                decoders, after_lead = group.decoders, group.decoders_after_lead
                lengths, expected = group.lead_lengths, group.lead_expected
                (count,) = _U64.unpack_from(data, offset)
                offset += 8
                for _ in range(count):
                    start = offset
                    (index,) = unpack_i64(data, offset)
                    offset += 8
                    skip = decoders
                    if lengths is not None and lengths.unpack_from(data, offset) == expected:
                        offset += lengths.size  # the leading states' lengths in one read
                        skip = after_lead
                    for _ in skip:
                        offset += 4 + unpack_u32(data, offset)[0]
                    if offset > size_of:
                        raise StateDecodeError("entity tiles: truncated state")
                    chunk = encoded[index] = data[start:offset]
                    # Lazily, rows are decoded when read (most of a worker's reads touch one).
                    rows[index] = None if lazy else group.decode_row(chunk)
        except struct.error as exc:
            raise StateDecodeError(f"entity tiles: truncated state at byte {offset}") from exc
        sc.check_done(data, offset, "entity tiles")
        return tiles

    def _decode_rows(self) -> None:
        for group, rows, encoded in zip(self.layout.groups, self.groups, self.encoded):  # noqa: B905  # hot path
            for index, row in rows.items():
                if row is None:
                    rows[index] = group.decode_row(encoded[index])
