"""The README's first command, `streamfs demo`: it brings everything up, and Ctrl-C takes
down everything it started."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from streamfs.services import process
from streamfs.services.kafka import healthy as kafka_healthy
from streamfs.services.redis import healthy as redis_healthy
from streamfs.services.schema_registry import healthy as registry_healthy
from tests.services.test_manager import private_env

REPO = Path(__file__).resolve().parents[2]


def test_demo_serves_until_ctrl_c_then_leaves_nothing_running(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "streamfs.cli", "demo"],
            cwd=REPO,
            env=private_env(run_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while "demo running" not in log.read_text():
            assert demo.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        states = {
            name: process.ProcessState.load(run_dir / name / "state.json")
            for name in ("kafka", "redis", "schema-registry")
        }
        kafka, redis, registry = states["kafka"], states["redis"], states["schema-registry"]
        assert kafka is not None
        assert redis is not None
        assert registry is not None
        assert kafka_healthy(kafka.address)
        assert redis_healthy(redis.address)
        assert registry_healthy(registry.address)
        assert f"kafka_bootstrap: {kafka.address}" in log.read_text()

        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=120) == 0, log.read_text()
        for state in (kafka, redis, registry):
            assert process.process_start_ticks(state.pid) is None, state
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
