"""The README's first command, `streamfs demo`: everything comes up, features are served
for demo entities, and Ctrl-C takes down everything it started."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
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
    env = private_env(run_dir)
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "streamfs.cli", "demo", "--rate", "40", "--port", "0"],
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
