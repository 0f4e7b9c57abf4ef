"""Entity, Aggregation, Derived and FeatureView: checks at declaration, and the compiled runtime."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest

from streamfs.definitions import (
    Aggregation,
    Derived,
    Entity,
    FeatureView,
    HourOfDay,
    Log,
    OneHot,
)
from streamfs.definitions.codec import view_from_json, view_to_json
from streamfs.definitions.compile import compile_view, derive
from streamfs.definitions.features import duration_ms
from streamfs.errors import DefinitionError, StreamfsError
from streamfs.tiles import EntityTiles
from streamfs.windows import DAY_MS, HOUR_MS, in_window

from .helpers import USER, purchase_view, purchases


def view_with(*features: Any, **overrides: Any) -> FeatureView:
    return FeatureView(
        "v", overrides.pop("entity", USER), purchases(), tuple(features), **overrides
    )


def test_an_aggregation_maps_onto_the_window_and_aggregator_runtime() -> None:
    a = Aggregation("n", "count", window="7d")
    assert (a.window_ms, a.hop_ms) == (7 * DAY_MS, DAY_MS)  # default_hop_ms
    b = Aggregation("s", "sum", "amount", window=timedelta(hours=1), hop="10m", filter="amount > 1")
    assert (b.window_ms, b.hop_ms) == (HOUR_MS, 10 * 60_000)
    assert b.window_spec.tile_count == 7


@pytest.mark.parametrize(
    ("value", "ms"),
    [(5000, 5000), ("90s", 90_000), ("5m", 300_000), ("2h", 2 * HOUR_MS), ("1w", 7 * DAY_MS)],
)
def test_durations(value: int | str, ms: int) -> None:
    assert duration_ms(value, "x") == ms


@pytest.mark.parametrize(
    ("make", "message"),
    [
        # a field missing from the source schema
        (
            lambda: view_with(Aggregation("s", "sum", "amout", window="1h")),
            "'amout' is not a field",
        ),
        (
            lambda: view_with(Aggregation("n", "count", window="1h", filter="coupn IS NULL")),
            "'coupn' is not a field",
        ),
        # type mismatches
        (lambda: view_with(Aggregation("s", "sum", "category", window="1h")), "type mismatch"),
        (lambda: view_with(Aggregation("s", "p95", "category", window="1h")), "type mismatch"),
        (
            lambda: view_with(Aggregation("n", "count", window="1h", filter="amount = 'x'")),
            "type mismatch",
        ),
        (
            lambda: view_with(Aggregation("n", "count", window="1h", data_type="float64")),
            "type mismatch: data_type is float64 but count produces int64",
        ),
        (
            lambda: view_with(Aggregation("l", "mean", Log("category"), window="1h")),
            "type mismatch",
        ),
        (
            lambda: view_with(
                Aggregation("n", "count", window="1h"), entity=Entity("u", ("id",), "int64")
            ),
            "type mismatch",
        ),
        # window not a whole multiple of its hop
        (lambda: view_with(Aggregation("n", "count", window="1h", hop="7m")), "whole multiple"),
        # duplicate names
        (
            lambda: view_with(
                Aggregation("n", "count", window="1h"), Aggregation("n", "count", window="2h")
            ),
            "duplicate feature name 'n'",
        ),
        (
            lambda: view_with(
                Aggregation("oh", "sum", OneHot("category", ("a", "b")), window="1h"),
                Aggregation("oh_a", "count", window="1h"),
            ),
            "duplicate feature name 'oh_a'",
        ),
        # other declaration checks
        (lambda: view_with(Aggregation("n", "cnt", window="1h")), "unknown aggregation function"),
        (lambda: view_with(Aggregation("n", "count")), "window is required"),
        (lambda: view_with(Aggregation("s", "sum", window="1h")), "needs an input column"),
        (lambda: view_with(Aggregation("n", "count", window="30d"), ttl="1d"), "ttl"),
        (lambda: view_with(Derived("r", "quotient", ("a", "b"))), "op 'quotient'"),
    ],
)
def test_invalid_definitions_are_refused_naming_view_feature_and_field(
    make: Any, message: str
) -> None:
    with pytest.raises(DefinitionError) as info:
        make()
    assert message in str(info.value), str(info.value)
    assert isinstance(info.value, StreamfsError)


def test_errors_name_the_view_and_the_feature() -> None:
    with pytest.raises(DefinitionError, match=r"feature view 'v', feature 's': column 'amout'"):
        view_with(Aggregation("s", "sum", "amout", window="1h"))


def test_output_types() -> None:
    view = view_with(
        Aggregation("n", "count", window="1h"),
        Aggregation("s", "sum", "items", window="1h"),
        Aggregation("a", "sum", "amount", window="1h"),
        Aggregation("m", "mean", "items", window="1h"),
        Aggregation("last_cat", "last", "category", window="1h"),
        Aggregation("oh", "sum", OneHot("category", ("books", "Home & Garden")), window="1h"),
        Aggregation("hour", "last", HourOfDay(), window="1h"),
        Derived("r", "ratio", ("n", "s")),
        Derived("d", "difference", ("n", "s")),
        Derived("p", "product", ("a", "s")),
    )
    assert view.feature_types() == {
        "n": "int64", "s": "int64", "a": "float64", "m": "float64", "last_cat": "string",
        "oh_books": "int64", "oh_home_garden": "int64", "hour": "int64",
        "r": "float64", "d": "int64", "p": "float64",
    }  # fmt: skip
    assert view.ttl_ms == HOUR_MS + 5 * 60_000  # longest window plus its hop


def test_views_round_trip_through_json() -> None:
    view = view_with(
        Aggregation("n", "count", window="1h", filter="amount > 1 AND coupon IS NULL"),
        Aggregation("oh", "sum", OneHot("category", ("a", "b")), window="1h"),
        Aggregation("lg", "mean", Log("amount", 1.0), window="1d", hop="1h"),
        Derived("r", "ratio", ("n", "oh_a")),
        owner="me",
        tags={"team": "ml"},
    )
    assert view_from_json(view_to_json(view)) == view
    assert view_from_json(view_to_json(purchase_view())) == purchase_view()


def brute(
    events: list[dict[str, Any]], t: int, window: int, hop: int, keep: Any, value: Any
) -> list[Any]:
    return [value(e) for e in events if in_window(e["created_at"], t, window, hop) and keep(e)]


def test_features_reading_the_same_input_get_the_same_value_and_no_other() -> None:
    # Inputs are computed once per distinct (input, filter, one-hot category) and
    # shared: every feature must still get its own input, not a look-alike's.
    view = view_with(
        Aggregation("n_1h", "count", window="1h"),
        Aggregation("n_1d", "count", window="1d", hop="1h"),
        Aggregation("big", "count", window="1h", filter="amount > 50"),
        Aggregation("sum_1h", "sum", "amount", window="1h"),
        Aggregation("mean_1d", "mean", "amount", window="1d", hop="1h"),
        Aggregation("sum_big", "sum", "amount", window="1h", filter="amount > 50"),
        Aggregation("one", "sum", "1", window="1h"),
        Aggregation("one_f", "sum", "1.0", window="1h"),
        Aggregation("cat", "count", OneHot("category", ("books", "toys")), window="1h"),
        Aggregation("cat2", "sum", OneHot("category", ("toys", "books")), window="1h"),
    )
    compiled = compile_view(view)
    names = [f.name for f in compiled.layout.features]
    record = {"amount": 20.0, "category": "toys", "coupon": None, "created_at": 0}
    got = dict(zip(names, compiled.inputs(record), strict=True))
    assert got == {
        "n_1h": 1, "n_1d": 1, "big": None, "sum_1h": 20.0, "mean_1d": 20.0,
        "sum_big": None, "one": 1, "one_f": 1.0,
        "cat_books": 0, "cat_toys": 1, "cat2_toys": 1, "cat2_books": 0,
    }  # fmt: skip
    assert type(got["one"]) is int
    assert type(got["one_f"]) is float


def test_compiled_view_matches_a_brute_force_scan() -> None:
    view = view_with(
        Aggregation("n_1h", "count", window="1h"),
        Aggregation("big_1h", "count", window="1h", filter="amount > 50"),
        Aggregation("sum_1d", "sum", "amount", window="1d", hop="1h", filter="coupon IS NULL"),
        Aggregation("cat", "sum", OneHot("category", ("books", "toys")), window="1d", hop="1h"),
        Aggregation("hour", "last", HourOfDay(), window="1d", hop="1h"),
        Derived("ratio", "ratio", ("n_1h", "big_1h")),
    )
    compiled = compile_view(view)
    assert [f.name for f in compiled.layout.features] == [
        "n_1h", "big_1h", "sum_1d", "cat_books", "cat_toys", "hour",
    ]  # fmt: skip
    base = 1_700_000_000_000
    events: list[dict[str, Any]] = [
        {
            "user_id": "u1",
            "amount": float(i * 7 % 100),
            "category": ("books", "toys", "home")[i % 3],
            "coupon": None if i % 4 else "C",
            "created_at": base + i * 7 * 60_000,
        }
        for i in range(60)
    ]
    tiles = EntityTiles(compiled.layout)
    for seq, event in enumerate(events):
        tiles.add_event(event["created_at"], compiled.inputs(event), seq)
    t: int = events[-1]["created_at"]
    got = compiled.finish(tiles.query(t))
    one_hour, one_day = (HOUR_MS, 5 * 60_000), (DAY_MS, HOUR_MS)
    n = len(brute(events, t, *one_hour, lambda e: True, lambda e: 1))
    big = len(brute(events, t, *one_hour, lambda e: e["amount"] > 50, lambda e: 1))
    assert got["n_1h"] == n
    assert got["big_1h"] == big
    assert got["sum_1d"] == sum(
        brute(events, t, *one_day, lambda e: e["coupon"] is None, lambda e: e["amount"])
    )
    assert got["cat_books"] == len(
        brute(events, t, *one_day, lambda e: e["category"] == "books", lambda e: 1)
    )
    assert got["cat_toys"] == len(
        brute(events, t, *one_day, lambda e: e["category"] == "toys", lambda e: 1)
    )
    assert got["hour"] == (t // HOUR_MS) % 24
    assert math.isclose(got["ratio"], n / big)


def test_derived_features_evaluate_with_sql_null_rules() -> None:
    ratio = Derived("r", "ratio", ("a", "b"))
    assert ratio.evaluate({"a": 1, "b": 4}) == 0.25
    assert ratio.evaluate({"a": 1, "b": 0}) is None
    assert ratio.evaluate({"a": None, "b": 4}) is None
    assert Derived("d", "difference", ("a", "b")).evaluate({"a": 5, "b": 7}) == -2
    assert Derived("p", "product", ("a", "b")).evaluate({"a": 5, "b": 7}) == 35
    chained = derive([ratio, Derived("twice", "product", ("r", "k"))], {"a": 1, "b": 2, "k": 2})
    assert chained["twice"] == 1.0
    assert ratio.sql({"a": "x", "b": "y"}) == "(CAST(x AS DOUBLE) / NULLIF(y, 0))"


def test_importing_definitions_starts_no_io_and_no_sql_parser() -> None:
    code = (
        "import sys, streamfs, streamfs.definitions, streamfs.store;"
        "heavy = {'sqlglot', 'aiokafka', 'faust', 'redis', 'duckdb', 'pyarrow', 'asyncio'}"
        " & {m.split('.')[0] for m in sys.modules};"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("[]", "['asyncio']"), out.stdout
