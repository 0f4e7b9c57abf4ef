"""Sawtooth window and tile math (DESIGN §3): pure integer functions of epoch milliseconds.

An aggregation over a window ``W`` with hop ``h`` (``W`` a whole multiple of ``h``)
answers a query at time ``t`` from every event of the entity with::

    window_start_ms(t) = floor((t - W) / h) * h  <=  event_time  <=  t

The tail hops (it moves in steps of ``h``), the head slides with ``t``, so the
window spans between ``W`` and ``W + h`` milliseconds, never less than ``W``.

Events are kept as per-hop *tiles*: tile ``k`` holds the partial aggregate of the
events with ``k * h <= event_time < (k + 1) * h``, i.e. ``k = event_time // h``.
The tiles of the window at ``t`` are ``(t - W) // h`` up to ``t // h`` (``W / h + 1``
tiles). Every tile but the last (the *head*, the one containing ``t``) lies wholly
inside the window. The head tile holds ``[k * h, t]`` of the window, and may also
hold events stamped after ``t``; those must not count.

The head-tile rule (how both engines stay exact)
-------------------------------------------------
A tile store is only ever asked about a time no earlier than the latest event it
holds: the query time is ``as_of_ms(t, last_event_time_ms) = max(t, last)``.
Then every stored event is ``<= as_of``, so the head tile holds exactly the part
of the window in it, and a merge of the window's tiles equals a brute-force scan
of the raw events for ``as_of``.

- Offline (point in time), events are applied in event-time order up to each
  entity_df timestamp ``t`` before ``t`` is asked, so ``as_of == t``: exact for ``t``.
- Online, ingest rejects events stamped more than ``max_skew_ms`` after the
  worker's clock (DLQ reason ``future``, see :func:`is_future`). Events inside the
  skew are kept, so at request time ``now`` an entity may hold an event stamped
  up to ``max_skew_ms`` after ``now``. The online answer is then the exact value
  as of ``max(now, last_event_time_ms)``, and the read returns that time next to
  the value (DESIGN §5 returns the last event time anyway). The skew check
  compares an online value with an offline one at that same ``as_of``. So online
  never counts an event that the offline answer for its ``as_of`` leaves out;
  the only freedom is that ``as_of`` can be up to ``max_skew_ms`` after ``now``.

Expiry: a query at any ``t >= now`` needs only tiles ``>= oldest_needed_tile(now)``,
so older tiles can be dropped. Pass a ``now`` lowered by the largest clock
difference between the worker and the readers, so a reader whose clock is behind
still finds its tiles.

Lateness: an event stamped more than the source's allowed lateness before the
worker's clock goes to the DLQ (reason ``late``, :func:`is_late`). Allowing more
than ``W + h`` buys nothing online: such an event's tile is already older than any
query at ``t >= now`` needs (:func:`useful_lateness_ms`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A sawtooth window: length ``window_ms`` in hops of ``hop_ms`` (a whole multiple)."""

    window_ms: int
    hop_ms: int

    def __post_init__(self) -> None:
        if self.hop_ms <= 0 or self.window_ms <= 0:
            raise ValueError(
                f"window_ms={self.window_ms} and hop_ms={self.hop_ms} must be positive"
            )
        if self.window_ms % self.hop_ms:
            raise ValueError(
                f"window_ms={self.window_ms} is not a whole multiple of hop_ms={self.hop_ms}"
            )

    @classmethod
    def of(cls, window_ms: int, hop_ms: int | None = None) -> WindowSpec:
        """A window with the given hop, or :func:`default_hop_ms` when none is given."""
        return cls(window_ms, default_hop_ms(window_ms) if hop_ms is None else hop_ms)

    @property
    def tile_count(self) -> int:
        """Tiles a query touches: ``W / h`` whole tiles plus the head."""
        return self.window_ms // self.hop_ms + 1


def default_hop_ms(window_ms: int) -> int:
    """A hop that splits a window into 7 or more tiles (12-30 for common windows): small state.

    Chooses the largest "round" hop (1 s, 5 s, 1 min, 5 min, 15 min, 1 h, 1 day)
    that divides ``window_ms`` into at least 7 tiles: 1 h -> 5 min (12 tiles),
    24 h -> 1 h (24), 7 d -> 1 day (7), 30 d -> 1 day (30).
    Windows not divisible by any of them fall back to ``window_ms / 12`` or 1 ms.
    """
    for hop_ms in (DAY_MS, HOUR_MS, 15 * MINUTE_MS, 5 * MINUTE_MS, MINUTE_MS, 5_000, 1_000):
        if window_ms % hop_ms == 0 and window_ms // hop_ms >= 7:
            return hop_ms
    return window_ms // 12 if window_ms % 12 == 0 else 1


def tile_of(event_time_ms: int, hop_ms: int) -> int:
    """The index of the tile holding ``event_time_ms``: it covers ``[k*h, (k+1)*h)``."""
    return event_time_ms // hop_ms


def window_start_ms(t_ms: int, window_ms: int, hop_ms: int) -> int:
    """The first event time (inclusive) in the window at ``t_ms``: ``floor((t-W)/h)*h``."""
    return (t_ms - window_ms) // hop_ms * hop_ms


def in_window(event_time_ms: int, t_ms: int, window_ms: int, hop_ms: int) -> bool:
    """Whether an event belongs to the window at ``t_ms`` (the brute-force definition)."""
    return window_start_ms(t_ms, window_ms, hop_ms) <= event_time_ms <= t_ms


def window_tiles(t_ms: int, window_ms: int, hop_ms: int) -> range:
    """Tile indexes of the window at ``t_ms``, oldest first; the last is the head tile.

    The head tile counts only events ``<= t_ms``: see the module docstring for why
    a tile store never holds later ones when asked (:func:`as_of_ms`).
    """
    return range((t_ms - window_ms) // hop_ms, t_ms // hop_ms + 1)


def as_of_ms(t_ms: int, last_event_time_ms: int | None) -> int:
    """The time a tile store answers for when asked at ``t_ms``: never before its last event."""
    if last_event_time_ms is None or last_event_time_ms <= t_ms:
        return t_ms
    return last_event_time_ms


def oldest_needed_tile(now_ms: int, window_ms: int, hop_ms: int) -> int:
    """The oldest tile any query at ``t >= now_ms`` reads; older tiles can be dropped."""
    return (now_ms - window_ms) // hop_ms


def useful_lateness_ms(window_ms: int, hop_ms: int) -> int:
    """Lateness beyond which an event can no longer change any online answer (``W + h``).

    An event ``W + h`` or more before ``now`` lies in a tile below
    :func:`oldest_needed_tile`; it still belongs in the offline log for
    historical queries, but online it would be evicted unread.
    """
    return window_ms + hop_ms


def is_late(event_time_ms: int, now_ms: int, allowed_lateness_ms: int) -> bool:
    """Whether an event is later than its source allows (DLQ reason ``late``)."""
    return event_time_ms < now_ms - allowed_lateness_ms


def is_future(event_time_ms: int, now_ms: int, max_skew_ms: int) -> bool:
    """Whether an event is stamped too far after the worker's clock (DLQ reason ``future``)."""
    return event_time_ms > now_ms + max_skew_ms
