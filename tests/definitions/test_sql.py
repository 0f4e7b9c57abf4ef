"""SQL into Aggregation specs: the design document's example, each supported form, refusals."""

from __future__ import annotations

import pytest

from streamfs.definitions.expr import And, Cmp, Col, Expr, In, IsNull, Lit, Or
from streamfs.definitions.sql import SqlFeature, parse_feature
from streamfs.errors import DefinitionError

DAY_MS = 86_400_000
WEEK = "created_at >= NOW() - INTERVAL '7 days'"


def parse(text: str) -> SqlFeature:
    return parse_feature(text, "feature 'f'")


def test_the_design_document_example() -> None:
    spec = parse("COUNT(*) FROM purchases WHERE created_at >= NOW() - INTERVAL '7 days'")
    assert spec == SqlFeature(
        source="purchases",
        function="count",
        input=None,
        window_ms=7 * DAY_MS,
        time_column="created_at",
        filter=None,
        group_by=(),
    )


@pytest.mark.parametrize(
    ("select", "function", "value"),
    [
        ("COUNT(*)", "count", None),
        ("COUNT(coupon)", "count", Col("coupon")),
        ("COUNT(DISTINCT category)", "count_distinct", Col("category")),
        ("SUM(amount)", "sum", Col("amount")),
        ("AVG(amount)", "mean", Col("amount")),
        ("MIN(amount)", "min", Col("amount")),
        ("MAX(amount)", "max", Col("amount")),
        ("STDDEV(amount)", "stddev", Col("amount")),
        ("STDDEV_POP(amount)", "stddev", Col("amount")),
        ("VARIANCE(amount)", "variance", Col("amount")),
        ("VAR_POP(amount)", "variance", Col("amount")),
        ("PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY amount)", "p95", Col("amount")),
        ("APPROX_QUANTILE(amount, 0.999)", "p99.9", Col("amount")),
        ("PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY amount)", "p50", Col("amount")),
    ],
)
def test_each_aggregate_form(select: str, function: str, value: Expr | None) -> None:
    spec = parse(f"SELECT {select} FROM purchases WHERE {WEEK}")
    assert (spec.function, spec.input, spec.window_ms) == (function, value, 7 * DAY_MS)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("amount > 10", Cmp(">", Col("amount"), Lit(10))),
        ("category = 'books'", Cmp("=", Col("category"), Lit("books"))),
        ("amount <= 9.5", Cmp("<=", Col("amount"), Lit(9.5))),
        ("category IN ('a', 'b')", In(Col("category"), ("a", "b"))),
        ("category NOT IN ('a')", In(Col("category"), ("a",), negate=True)),
        ("coupon IS NULL", IsNull(Col("coupon"))),
        ("coupon IS NOT NULL", IsNull(Col("coupon"), negate=True)),
        (
            "amount > 10 OR coupon IS NULL",
            Or((Cmp(">", Col("amount"), Lit(10)), IsNull(Col("coupon")))),
        ),
        (
            "(amount > 10 OR items > 2) AND category != 'x'",
            And(
                (
                    Or((Cmp(">", Col("amount"), Lit(10)), Cmp(">", Col("items"), Lit(2)))),
                    Cmp("!=", Col("category"), Lit("x")),
                )
            ),
        ),
    ],
)
def test_where_filters_next_to_the_window(condition: str, expected: Expr) -> None:
    spec = parse(f"SUM(amount) FROM purchases WHERE {WEEK} AND ({condition})")
    assert spec.filter == expected
    assert spec.window_ms == 7 * DAY_MS
    # the window condition may come anywhere in the AND
    assert parse(f"SUM(amount) FROM purchases WHERE ({condition}) AND {WEEK}").filter == expected


@pytest.mark.parametrize(
    ("interval", "ms"),
    [
        ("INTERVAL '1 hour'", 3_600_000),
        ("INTERVAL '90 minutes'", 90 * 60_000),
        ("INTERVAL '30 days'", 30 * DAY_MS),
        ("INTERVAL '2 weeks'", 14 * DAY_MS),
        ("INTERVAL 24 HOUR", DAY_MS),
        ("INTERVAL '45' SECOND", 45_000),
    ],
)
def test_window_intervals(interval: str, ms: int) -> None:
    assert parse(f"COUNT(*) FROM purchases WHERE created_at > NOW() - {interval}").window_ms == ms
    text = f"COUNT(*) FROM purchases WHERE created_at >= CURRENT_TIMESTAMP - {interval}"
    assert parse(text).window_ms == ms


def test_select_keyword_alias_semicolon_and_group_by_are_accepted() -> None:
    spec = parse(f"select sum(amount) as total from purchases where {WEEK} group by user_id;")
    assert (spec.function, spec.group_by) == ("sum", ("user_id",))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"COUNT(*) FROM purchases p JOIN users u ON p.user_id = u.id WHERE {WEEK}", "JOIN"),
        (f"COUNT(*) FROM purchases WHERE {WEEK} ORDER BY 1", "ORDER BY"),
        (f"COUNT(*) FROM purchases WHERE {WEEK} LIMIT 5", "LIMIT"),
        (f"COUNT(*) FROM purchases WHERE {WEEK} GROUP BY user_id HAVING COUNT(*) > 1", "HAVING"),
        (f"MEDIAN(amount) FROM purchases WHERE {WEEK}", "MEDIAN"),
        (f"FOO(amount) FROM purchases WHERE {WEEK}", "FOO"),
        (f"STDDEV_SAMP(amount) FROM purchases WHERE {WEEK}", "STDDEV_SAMP"),
        (f"VAR_SAMP(amount) FROM purchases WHERE {WEEK}", "VAR_SAMP"),
        (f"COUNT(*), SUM(amount) FROM purchases WHERE {WEEK}", "exactly one aggregate"),
        (f"COUNT(*) FROM (SELECT * FROM purchases) WHERE {WEEK}", "FROM must name one source"),
        ("COUNT(*) FROM purchases", "window"),
        ("COUNT(*) FROM purchases WHERE amount > 1", "window"),
        (f"COUNT(*) FROM purchases WHERE {WEEK} OR amount > 1", "window"),
        ("COUNT(*) FROM purchases WHERE created_at >= NOW() - INTERVAL '1 month'", "MONTH"),
        (f"COUNT(*) FROM purchases WHERE {WEEK} AND category IN (SELECT 1)", "IN"),
        (f"COUNT(*) FROM purchases WHERE {WEEK} AND category LIKE 'a%'", "LIKE"),
        (f"COUNT(*) FROM purchases WHERE {WEEK} AND upper(category) = 'A'", "UPPER"),
        (f"COUNT(*) FROM purchases WHERE {WEEK} AND p.amount > 1", "qualified column"),
        (f"COUNT(*) FROM purchases WHERE {WEEK} AND created_at > NOW()", "CURRENT_TIMESTAMP"),
        ("COUNT(* FROM purchases", "cannot parse"),
    ],
)
def test_unsupported_sql_is_refused_naming_the_construct(text: str, message: str) -> None:
    with pytest.raises(DefinitionError, match="feature 'f'") as info:
        parse(text)
    assert message.lower() in str(info.value).lower(), str(info.value)
