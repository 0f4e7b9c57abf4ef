"""The registry without Kafka: plans, versions, lineage, validation at apply, register_feature."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamfs.definitions import Aggregation, Derived, Entity, FeatureView
from streamfs.errors import DefinitionError
from streamfs.registry import render
from streamfs.registry.backend import MemoryBackend
from streamfs.registry.plan import Topology
from streamfs.registry.records import RegistryError, decode, encode
from streamfs.registry.topology import load_topology
from streamfs.settings import Settings
from streamfs.store import FeatureStore
from tests.definitions.helpers import USER, page_views, purchase_view, purchases

REPO = Path(__file__).resolve().parents[2]
SQL_EXAMPLE = "COUNT(*) FROM purchases WHERE created_at >= NOW() - INTERVAL '7 days'"
HOUR = "created_at >= NOW() - INTERVAL '1 hour'"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        self.now += 1000
        return self.now


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def store(backend: MemoryBackend) -> FeatureStore:
    return FeatureStore(Settings(), backend=backend, who="alice", clock=Clock())


def test_apply_creates_then_a_second_apply_changes_nothing(
    store: FeatureStore, backend: MemoryBackend
) -> None:
    plan = store.apply([purchase_view()])
    assert [(s.action, s.kind, s.name, s.version) for s in plan.steps] == [
        ("create", "entity", "user", 1),
        ("create", "source", "purchases", 1),
        ("create", "view", "user_purchases", 1),
    ]
    written = len(backend.log)
    again = store.apply([purchase_view()])
    assert again.empty
    assert not again.steps
    assert len(again.unchanged) == 3
    assert len(backend.log) == written
    assert render.summary(again).startswith("No changes")


def test_a_changed_window_makes_version_2_and_version_1_stays_listed(
    store: FeatureStore,
) -> None:
    store.apply([purchase_view()])
    plan = store.apply([purchase_view(window_1h="2h")])
    [step] = plan.steps
    assert (step.action, step.name, step.version, step.new_state) == (
        "change", "user_purchases", 2, True,
    )  # fmt: skip
    assert "features[purchase_count_1h].window_ms: 3600000 -> 7200000" in step.changes
    assert any("hop_ms" in c for c in step.changes)
    details = store.get_feature("purchase_count_1h")
    assert [(v.version, v.view_version, v.served) for v in details.versions] == [
        (1, 1, True), (2, 2, True),
    ]  # fmt: skip
    assert details.versions[0].spec["window_ms"] == 3_600_000
    assert details.versions[1].spec["window_ms"] == 7_200_000
    assert details.versions[0].who == "alice"
    # untouched features keep their version; the old view version stays readable
    assert store.get_feature("purchase_count_30d").info.version == 1
    assert store.get_feature_view("user_purchases", 1) == purchase_view()
    state = store.registry_state()
    assert state.served_state_versions("user_purchases") == [1, 2]
    store.retire("user_purchases", 1)
    assert store.registry_state().served_state_versions("user_purchases") == [2]
    assert [v.served for v in store.get_feature("purchase_count_1h").versions] == [False, True]
    with pytest.raises(RegistryError, match="is the latest"):
        store.retire("user_purchases", 2)


def test_a_description_change_is_a_new_version_that_keeps_the_state(store: FeatureStore) -> None:
    store.apply([purchase_view()])
    plan = store.apply([purchase_view(description="changed")])
    [step] = plan.steps
    assert step.changes == ('description: "purchases per user" -> "changed"',)
    assert not step.new_state
    state = store.registry_state()
    record = state.current("view", "user_purchases")
    assert record is not None
    assert (record.version, record.state_version) == (2, 1)
    assert state.served_state_versions("user_purchases") == [1]
    assert len(store.get_feature("purchase_count_1h").versions) == 1


def test_views_missing_from_the_topology_are_removed(store: FeatureStore) -> None:
    pv = FeatureView(
        "user_page_views", USER, page_views(), (Aggregation("pv_1h", "count", window="1h"),)
    )
    store.apply([purchase_view(), pv])
    plan = store.apply([purchase_view()])
    assert [(s.action, s.kind, s.name) for s in plan.steps] == [
        ("remove", "view", "user_page_views"),
        ("remove", "source", "page_views"),
    ]
    names = [f.name for f in store.list_features()]
    assert "pv_1h" not in names
    history = store.registry_state().history("view", "user_page_views")
    assert [r.removed for r in history] == [False, True]  # the old version stays readable


def test_lineage_runs_from_topic_to_feature_and_through_derived_features(
    store: FeatureStore,
) -> None:
    view = purchase_view(
        features=(
            *purchase_view().features,
            Derived("ratio_squared", "product", ("purchase_ratio", "purchase_ratio")),
        )
    )
    store.apply([view])
    lineage = store.get_feature("purchase_ratio").lineage
    assert (lineage.topic, lineage.schema_subject, lineage.view, lineage.entity) == (
        "purchase", "purchase-value", "user_purchases", "user",
    )  # fmt: skip
    assert lineage.inputs == ("purchase_count_1h", "purchase_count_30d")
    assert lineage.downstream == ("ratio_squared",)
    assert store.get_feature("ratio_squared").lineage.upstream == (
        "purchase_ratio", "purchase_count_1h", "purchase_count_30d",
    )  # fmt: skip
    assert store.get_feature("purchase_count_1h").lineage.downstream == ("purchase_ratio",)


def test_the_design_documents_register_feature_call(store: FeatureStore) -> None:
    store.apply([purchase_view()])
    info = store.register_feature(
        name="user_purchase_frequency_7d",
        description="Number of purchases in last 7 days",
        data_type="int64",
        transformation=SQL_EXAMPLE,
    )
    assert (info.name, info.data_type, info.version, info.origin) == (
        "user_purchase_frequency_7d", "int64", 1, "sql",
    )  # fmt: skip
    assert info.sql == SQL_EXAMPLE
    view = store.get_feature_view("user_purchase_frequency_7d")
    [aggregation] = view.aggregations
    assert (aggregation.function, aggregation.input, aggregation.window_ms) == (
        "count", None, 7 * 86_400_000,
    )  # fmt: skip
    assert view.source == purchases()
    assert view.entity == USER
    # the same call again changes nothing; a new window is version 2
    store.register_feature(
        "user_purchase_frequency_7d", "Number of purchases in last 7 days", "int64", SQL_EXAMPLE
    )
    assert store.get_feature("user_purchase_frequency_7d").info.version == 1
    store.register_feature(
        "user_purchase_frequency_7d", "n", "int64", SQL_EXAMPLE.replace("7 days", "14 days")
    )
    assert [v.version for v in store.get_feature("user_purchase_frequency_7d").versions] == [1, 2]
    # an apply of the topology leaves SQL-registered features alone
    assert store.apply([purchase_view()]).empty


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data_type": "float64"}, "type mismatch: data_type is float64 but count produces int64"),
        ({"data_type": "decimal"}, "data_type 'decimal'"),
        (
            {"transformation": f"SUM(amout) FROM purchases WHERE {HOUR}"},
            "'amout' is not a field",
        ),
        (
            {"transformation": f"COUNT(*) FROM orders WHERE {HOUR}"},
            "'orders' is not a registered source",
        ),
        (
            {"transformation": "COUNT(*) FROM purchases WHERE amount >= NOW() - INTERVAL '1 hour'"},
            "the window is on 'amount'",
        ),
        ({"name": "purchase_count_1h"}, "feature view 'user_purchases'"),
        ({"name": "user_purchases"}, "comes from a topology"),
    ],
)
def test_register_feature_refusals(
    store: FeatureStore, kwargs: dict[str, str], message: str
) -> None:
    store.apply([purchase_view()])
    call = {"name": "f", "description": "d", "data_type": "int64", "transformation": SQL_EXAMPLE}
    with pytest.raises((DefinitionError, RegistryError)) as info:
        store.register_feature(**{**call, **kwargs})
    assert message in str(info.value), str(info.value)


def other_view(*features: Aggregation | Derived, name: str = "other") -> FeatureView:
    return FeatureView(name, USER, purchases(), features)


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        (
            lambda: [
                purchase_view(),
                other_view(Aggregation("amount_sum_7d", "sum", "amount", window="1d")),
            ],
            "feature view 'other', feature 'amount_sum_7d': duplicate name",
        ),
        (
            lambda: [purchase_view(), purchase_view(description="another")],
            "duplicate name: two feature views are named 'user_purchases'",
        ),
        (
            lambda: [purchase_view(), Entity("user", ("user_id",), description="other")],
            "duplicate name: two different entity definitions are named 'user'",
        ),
        (
            lambda: [
                purchase_view(),
                other_view(Derived("r", "ratio", ("purchase_count_1h", "nope"))),
            ],
            "feature view 'other', feature 'r': derived input 'nope' does not exist",
        ),
        (
            lambda: [
                purchase_view(),
                other_view(
                    Aggregation("last_cat", "last", "category", window="1d"),
                    name="cats",
                ),
                other_view(Derived("r", "ratio", ("purchase_count_1h", "last_cat"))),
            ],
            "feature view 'other', feature 'r': type mismatch",
        ),
    ],
)
def test_invalid_topologies_are_refused_and_nothing_is_applied(
    store: FeatureStore, backend: MemoryBackend, objects: object, message: str
) -> None:
    store.apply([purchase_view(window_1h="2h")])
    before = list(backend.log)
    with pytest.raises(DefinitionError) as info:
        store.apply(objects())  # type: ignore[operator]  # the lambdas above
    assert message in str(info.value), str(info.value)
    assert backend.log == before


def test_derived_inputs_may_come_from_another_view(store: FeatureStore) -> None:
    store.apply(
        [
            purchase_view(),
            other_view(Derived("r2", "difference", ("amount_sum_7d", "purchase_count_1h"))),
        ]
    )
    assert store.get_feature("r2").info.data_type == "float64"
    assert store.get_feature("r2").lineage.inputs == ("amount_sum_7d", "purchase_count_1h")


def test_the_sample_topology_loads_and_applies(store: FeatureStore) -> None:
    topology = load_topology(REPO / "topology")
    assert isinstance(topology, Topology)
    assert {v.name for v in topology.views} == {"user_purchases", "user_page_views"}
    plan = store.apply(REPO / "topology")
    assert {(s.kind, s.name) for s in plan.steps} >= {
        ("entity", "user"), ("source", "purchases"), ("source", "page_views"),
        ("view", "user_purchases"), ("view", "user_page_views"),
    }  # fmt: skip
    names = {f.name for f in store.list_features()}
    for window in ("1h", "24h", "7d", "30d"):
        for stat in ("count", "amount_sum", "amount_mean", "amount_stddev"):
            assert f"purchase_{stat}_{window}" in names
    assert {
        "purchase_categories_7d", "purchase_amount_p95_30d", "page_views_1h",
        "last_purchase_category", "purchase_count_ratio_1h_30d",
    } <= names  # fmt: skip
    assert store.apply(REPO / "topology").empty


def test_a_broken_topology_file_is_refused_naming_file_view_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "from streamfs.definitions import Aggregation, FeatureView\n"
        "from tests.definitions.helpers import USER, purchases\n"
        "n = Aggregation('n', 'sum', 'amout', window='1h')\n"
        "v = FeatureView('v', USER, purchases(), (n,))\n"
    )
    with pytest.raises(
        DefinitionError, match=r"bad.py: feature view 'v', feature 'n': column 'amout'"
    ):
        load_topology(tmp_path)


def test_records_round_trip_and_skip_newer_formats(
    store: FeatureStore, backend: MemoryBackend
) -> None:
    store.apply([purchase_view()])
    for key, value in backend.log:
        record = decode(key, value)
        assert record is not None
        assert encode(record) == (key, value)
    assert decode(b'{"kind":"view","name":"x","version":1}', b'{"format": 99}') is None
    with pytest.raises(RegistryError, match="undecodable"):
        decode(b"{}", b"{}")
