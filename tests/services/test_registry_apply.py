"""`streamfs apply topology/` and `streamfs features` against the real Kafka, on a private topic."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from streamfs.registry import command
from streamfs.settings import Settings
from streamfs.store import FeatureStore

pytestmark = pytest.mark.services
REPO = Path(__file__).resolve().parents[2]


def streamfs(
    capsys: pytest.CaptureFixture[str], bootstrap: str, topic: str, *argv: str
) -> tuple[int, str]:
    """Run a registry subcommand as the CLI does (parser, then handler), with its output."""
    parser = argparse.ArgumentParser(prog="streamfs")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([*argv, "--registry-topic", topic])
    capsys.readouterr()
    code = int(args.handler(args, Settings(kafka_bootstrap=bootstrap)))
    return code, capsys.readouterr().out


def copy_topology(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "topology", tmp_path / "topology")
    shutil.copytree(REPO / "avro_schemas", tmp_path / "avro_schemas")
    return tmp_path / "topology"


def test_apply_the_sample_topology_then_nothing_then_a_new_version(
    kafka_bootstrap: str,
    unique: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    topic = unique("registry")

    def run(*argv: str) -> tuple[int, str]:
        return streamfs(capsys, kafka_bootstrap, topic, *argv)

    code, out = run("apply", str(REPO / "topology"), "--dry-run")
    assert code == 0
    assert "+ create view user_purchases (version 1)" in out
    assert run("features", "list")[1].strip().splitlines()[-1] == "No features registered."

    code, out = run("apply", str(REPO / "topology"))
    assert code == 0, out
    assert out.index("Plan for") < out.index("+ create entity user") < out.index("Applied:")
    assert "+ create view user_page_views (version 1)" in out

    code, out = run("apply", str(REPO / "topology"))
    assert code == 0
    assert "No changes: the registry already holds this topology." in out
    assert "Applied" not in out

    code, out = run("features", "list")
    assert "purchase_amount_p95_30d" in out
    assert "page_views_1h" in out
    assert "user_purchases@1" in out

    changed = copy_topology(tmp_path)
    features = changed / "user_features.py"
    text = features.read_text()
    assert '"page_views_1h", "count", window="1h"' in text
    features.write_text(
        text.replace(
            '"page_views_1h", "count", window="1h"', '"page_views_1h", "count", window="2h"'
        )
    )
    code, out = run("apply", str(changed))
    assert code == 0, out
    assert "~ change view user_page_views (version 2)" in out
    assert "features[page_views_1h].window_ms: 3600000 -> 7200000" in out

    code, out = run("features", "show", "page_views_1h")
    assert "v1: view user_page_views@1" in out
    assert "[served]" in out
    assert "v2: view user_page_views@2" in out
    assert "topic 'page_view', schema subject 'page_view-value'" in out

    store = FeatureStore(Settings(kafka_bootstrap=kafka_bootstrap, registry_topic=topic))
    details = store.get_feature("page_views_1h")
    assert [(v.version, v.spec["window_ms"]) for v in details.versions] == [
        (1, 3_600_000), (2, 7_200_000),
    ]  # fmt: skip
    assert store.get_feature_view("user_page_views", 1).aggregations[0].window_ms == 3_600_000


def test_invalid_topology_writes_nothing(
    kafka_bootstrap: str,
    unique: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from streamfs.errors import DefinitionError

    topic = unique("registry")
    broken = copy_topology(tmp_path)
    text = (broken / "user_features.py").read_text()
    (broken / "user_features.py").write_text(
        text.replace('"category",\n        window="7d"', '"categry",\n        window="7d"')
    )
    with pytest.raises(DefinitionError, match="feature 'purchase_categories_7d': column 'categry'"):
        streamfs(capsys, kafka_bootstrap, topic, "apply", str(broken))
    out = streamfs(capsys, kafka_bootstrap, topic, "features", "list")[1]
    assert out.strip().splitlines()[-1] == "No features registered."


def test_register_feature_and_concurrent_applies(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    import streamfs.registry.kafka  # noqa: F401  # imported before the threads start
    from streamfs.registry.topology import load_topology

    # CPython 3.11 compiling in several threads at once can corrupt the AST recursion
    # counter (gh-106905): load (and so compile) the topology once, up front.
    topology = load_topology(REPO / "topology")
    settings = Settings(kafka_bootstrap=kafka_bootstrap, registry_topic=unique("registry"))
    stores = [FeatureStore(settings, who=f"writer{i}") for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        plans = list(pool.map(lambda s: s.apply(topology), stores))
    # serialised by transactional fencing: exactly one writer created, the others found it done
    assert sorted(len(p.records) for p in plans)[:2] == [0, 0]
    state = stores[0].registry_state()
    assert [r.version for r in state.history("view", "user_purchases")] == [1]

    info = stores[1].register_feature(
        name="user_purchase_frequency_7d",
        description="Number of purchases in last 7 days",
        data_type="int64",
        transformation="COUNT(*) FROM purchases WHERE created_at >= NOW() - INTERVAL '7 days'",
    )
    assert (info.version, info.view, info.data_type) == (1, "user_purchase_frequency_7d", "int64")
    listed = {f.name: f for f in stores[2].list_features()}
    assert listed["user_purchase_frequency_7d"].sql is not None
