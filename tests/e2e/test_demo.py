"""The README's first command, `streamfs demo`: everything comes up, features are served
for demo entities over HTTP and the SDK, the web view answers, the Parquet log grows,
and Ctrl-C takes down everything it started."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from streamfs.errors import StreamfsError
from streamfs.services import process
from streamfs.settings import Settings
from streamfs.store import FeatureStore
from tests.services.test_manager import private_env

REPO = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def test_demo_serves_features_until_ctrl_c_then_leaves_nothing_running(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    log = tmp_path / "demo.log"
    env = private_env(run_dir) | {"STREAMFS_OFFLINE_ROOT": str(tmp_path / "offline")}
    port = process.free_port()
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "streamfs.cli", "demo", "--rate", "40", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while "demo running" not in log.read_text():
            assert demo.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        states = [
            process.ProcessState.load(run_dir / name / "state.json")
            for name in ("kafka", "redis", "schema-registry")
        ]
        assert all(s is not None and process.is_running(s) for s in states)

        # Features flow: a demo user's purchase count rises above zero.
        settings = Settings(run_dir=run_dir).with_addresses(
            dict(
                line.removeprefix("export ").split("=", 1)
                for line in (run_dir / "env").read_text().splitlines()
            )
        )
        store = FeatureStore(settings)
        counts: list[int] = []
        deadline = time.monotonic() + 90
        while not counts or max(counts) == 0:
            assert time.monotonic() < deadline, f"no features served; {log.read_text()}"
            assert demo.poll() is None, log.read_text()
            time.sleep(1)
            try:
                rows = store.get_online_features(
                    [f"u{i:06d}" for i in range(20)], ["purchase_count_1h"]
                )
            except StreamfsError:  # the registry may not be applied yet
                continue
            assert isinstance(rows, list)
            counts = [row.values["purchase_count_1h"] for row in rows]

        # The same over HTTP, and the web view answers.
        base = f"http://127.0.0.1:{port}"
        busiest = f"u{counts.index(max(counts)):06d}"
        with urllib.request.urlopen(  # our own local server
            f"{base}/v1/features/online/user_purchases/{busiest}?features=purchase_count_1h",
            timeout=10,
        ) as response:
            body = json.loads(response.read())
        assert body["entity"] == busiest
        # A 1 h count only grows during the test: at least what the SDK saw, which was > 0.
        assert body["features"]["purchase_count_1h"] >= max(counts) > 0
        with urllib.request.urlopen(f"{base}/", timeout=10) as response:
            assert response.status == 200
            assert "user_purchases" in response.read().decode()

        # The offline log grows while events flow.
        def parquet_bytes() -> int:
            return sum(p.stat().st_size for p in (tmp_path / "offline").rglob("*.parquet"))

        before = parquet_bytes()
        deadline = time.monotonic() + 30
        while parquet_bytes() <= before:
            assert time.monotonic() < deadline, "the Parquet log did not grow"
            time.sleep(0.5)

        children = descendants(demo.pid)
        assert len(children) >= 4  # two workers and two producers at least
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=120) == 0, log.read_text()
        for pid in children:
            assert process.process_start_ticks(pid) is None, f"pid {pid} left running"
        for state in states:
            assert state is not None
            assert process.process_start_ticks(state.pid) is None, state
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
