"""Per-user features: purchase counts and amount statistics over 1h, 24h, 7d and 30d, and more."""

from streamfs.definitions import Aggregation, Derived, Feature, FeatureView

from .entities import user
from .sources import page_views, purchases

WINDOWS = ("1h", "24h", "7d", "30d")

purchase_features: list[Feature] = []
for window in WINDOWS:
    purchase_features += [
        Aggregation(
            f"purchase_count_{window}",
            "count",
            window=window,
            description=f"Purchases in the last {window}.",
        ),
        Aggregation(
            f"purchase_amount_sum_{window}",
            "sum",
            "amount",
            window=window,
            description=f"Total amount spent in the last {window}.",
        ),
        Aggregation(
            f"purchase_amount_mean_{window}",
            "mean",
            "amount",
            window=window,
            description=f"Mean purchase amount in the last {window}.",
        ),
        Aggregation(
            f"purchase_amount_stddev_{window}",
            "stddev",
            "amount",
            window=window,
            description=f"Standard deviation (population) of purchase amounts, last {window}.",
        ),
    ]

purchase_features += [
    Aggregation(
        "purchase_categories_7d",
        "count_distinct",
        "category",
        window="7d",
        description="Distinct categories bought in the last 7 days.",
    ),
    Aggregation(
        "purchase_amount_p95_30d",
        "p95",
        "amount",
        window="30d",
        description="95th percentile of purchase amounts in the last 30 days (approximate).",
    ),
    Aggregation(
        "last_purchase_category",
        "last",
        "category",
        window="30d",
        description="Category of the latest purchase in the last 30 days.",
    ),
    Derived(
        "purchase_count_ratio_1h_30d",
        "ratio",
        ("purchase_count_1h", "purchase_count_30d"),
        description="Purchases in the last hour over purchases in the last 30 days.",
    ),
]

user_purchases = FeatureView(
    name="user_purchases",
    entity=user,
    source=purchases,
    features=tuple(purchase_features),
    owner="shop-ml",
    tags={"domain": "shop"},
    description="What and how much each user buys.",
)

user_page_views = FeatureView(
    name="user_page_views",
    entity=user,
    source=page_views,
    features=(
        Aggregation(
            "page_views_1h", "count", window="1h", description="Pages viewed in the last hour."
        ),
    ),
    owner="shop-ml",
    tags={"domain": "shop"},
    description="How active each user is on the site.",
)
