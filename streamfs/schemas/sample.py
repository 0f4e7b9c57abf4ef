"""Seeded sample events of the online shop (``avro_schemas/*.avsc``), for demos, tests, benchmarks.

The same seed, ``entities`` and clock readings give the same events, call for call.
Users are picked with a long tail, as in a real shop: a few users are busy, most
come rarely, so per-entity windows see both crowded and empty keys. Event time is
the injected clock's reading, minus up to ``disorder_ms`` to make a stream slightly
out of order (0 keeps it ordered).

    clock = stepping_clock(start_ms=1_700_000_000_000, step_ms=250)
    shop = ShopEvents(seed=7, entities=10_000, clock=clock)
    purchases = list(shop.events("purchase", 1_000))
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Literal

from streamfs.errors import ConfigError

Kind = Literal["purchase", "page_view", "user_signup"]
KINDS: Final[tuple[Kind, ...]] = ("purchase", "page_view", "user_signup")
# The .avsc file of each kind, under avro_schemas/.
SCHEMA_FILES: Final[Mapping[Kind, str]] = {kind: f"{kind}.avsc" for kind in KINDS}
# The event-time field of each kind (the entity key is user_id throughout).
EVENT_TIME_FIELDS: Final[Mapping[Kind, str]] = {
    "purchase": "created_at",
    "page_view": "viewed_at",
    "user_signup": "signed_up_at",
}

# category -> (weight, median item price): lognormal prices around the median.
_CATEGORIES = {
    "electronics": (12, 120.0),
    "fashion": (25, 45.0),
    "home": (15, 60.0),
    "books": (14, 15.0),
    "beauty": (10, 25.0),
    "sports": (9, 55.0),
    "toys": (8, 30.0),
    "grocery": (7, 20.0),
}
_CURRENCIES = {"EUR": 60, "USD": 25, "GBP": 10, "CHF": 5}
_PAYMENT_METHODS = {"card": 55, "paypal": 30, "invoice": 10, "apple_pay": 5}
_COUPONS = ("WELCOME10", "SPRING15", "FREESHIP", "VIP20")
_COUPON_RATE = 0.12
_COUNTRIES = {"DE": 30, "FR": 15, "GB": 14, "US": 12, "NL": 8, "ES": 7, "IT": 7, "PL": 4, "AT": 3}
_CHANNELS = {"organic": 40, "paid_search": 25, "social": 18, "referral": 10, "email": 7}
_REFERRERS = {
    None: 40,
    "https://www.google.com/": 35,
    "https://www.instagram.com/": 10,
    "https://newsletter.shop.example/": 8,
    "https://www.bing.com/": 4,
    "https://t.co/": 3,
}
_PAGES = {"/": 15, "product": 45, "category": 20, "/search": 10, "/cart": 7, "/checkout": 3}
_PRODUCTS = 5_000
_USER_SKEW = 2.5  # user index = entities * u**skew, u uniform: a long tail of rare users


def stepping_clock(start_ms: int, step_ms: int) -> Callable[[], int]:
    """A clock for samples and tests: ``start_ms``, then ``step_ms`` later on each call."""
    readings = itertools.count(start_ms, step_ms)
    return lambda: next(readings)


class _Choice:
    """Weighted choice with cumulative weights computed once (``random.choices`` per call)."""

    def __init__(self, weights: Mapping[Any, float]) -> None:
        self.values = list(weights)
        self.cum = list(itertools.accumulate(weights.values()))

    def pick(self, rng: random.Random) -> Any:
        return rng.choices(self.values, cum_weights=self.cum)[0]


class ShopEvents:
    """Realistic purchase, page_view and user_signup records, as dicts that fit the .avsc."""

    def __init__(
        self,
        *,
        seed: int,
        entities: int,
        clock: Callable[[], int],
        disorder_ms: int = 0,
    ) -> None:
        if entities < 1:
            raise ConfigError(f"entities must be at least 1, got {entities}")
        self.entities = entities
        self._rng = random.Random(seed)  # noqa: S311  # sample data: reproducible, not secret
        self._clock = clock
        self._disorder_ms = disorder_ms
        self._category = _Choice({name: w for name, (w, _) in _CATEGORIES.items()})
        self._currency = _Choice(_CURRENCIES)
        self._payment = _Choice(_PAYMENT_METHODS)
        self._country = _Choice(_COUNTRIES)
        self._channel = _Choice(_CHANNELS)
        self._referrer = _Choice(_REFERRERS)
        self._page = _Choice(_PAGES)
        self._makers: dict[Kind, Callable[[], dict[str, Any]]] = {
            "purchase": self.purchase,
            "page_view": self.page_view,
            "user_signup": self.user_signup,
        }

    def user_id(self) -> str:
        index = min(int(self.entities * self._rng.random() ** _USER_SKEW), self.entities - 1)
        return f"u{index:06d}"

    def purchase(self) -> dict[str, Any]:
        rng = self._rng
        category = self._category.pick(rng)
        items = min(1 + int(rng.expovariate(0.8)), 20)
        median = _CATEGORIES[category][1]
        amount = sum(rng.lognormvariate(0.0, 0.6) for _ in range(items)) * median
        return {
            "user_id": self.user_id(),
            "order_id": f"o{rng.getrandbits(48):012x}",
            "amount": round(amount, 2),
            "currency": self._currency.pick(rng),
            "category": category,
            "created_at": self._event_time_ms(),
            "coupon": rng.choice(_COUPONS) if rng.random() < _COUPON_RATE else None,
            "items": items,
            "payment_method": self._payment.pick(rng),
        }

    def page_view(self) -> dict[str, Any]:
        rng = self._rng
        page = self._page.pick(rng)
        if page == "product":
            page = f"/product/p{rng.randrange(_PRODUCTS):05d}"
        elif page == "category":
            page = f"/category/{self._category.pick(rng)}"
        return {
            "user_id": self.user_id(),
            "page": page,
            "referrer": self._referrer.pick(rng),
            "duration_ms": min(int(rng.lognormvariate(9.3, 1.0)), 3_600_000),
            "viewed_at": self._event_time_ms(),
        }

    def user_signup(self) -> dict[str, Any]:
        rng = self._rng
        return {
            "user_id": f"u{rng.randrange(self.entities):06d}",
            "country": self._country.pick(rng),
            "channel": self._channel.pick(rng),
            "signed_up_at": self._event_time_ms(),
        }

    def events(self, kind: Kind, count: int) -> Iterator[dict[str, Any]]:
        """``count`` events of one kind."""
        make = self._makers[kind]
        for _ in range(count):
            yield make()

    def mixed(
        self, count: int, weights: Mapping[Kind, float] | None = None
    ) -> Iterator[tuple[Kind, dict[str, Any]]]:
        """``count`` events of all kinds interleaved, by default mostly page views."""
        choice = _Choice(weights or {"page_view": 80, "purchase": 15, "user_signup": 5})
        for _ in range(count):
            kind: Kind = choice.pick(self._rng)
            yield kind, self._makers[kind]()

    def _event_time_ms(self) -> int:
        now_ms = self._clock()
        if self._disorder_ms:
            return now_ms - self._rng.randrange(self._disorder_ms + 1)
        return now_ms
