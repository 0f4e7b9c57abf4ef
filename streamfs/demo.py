"""``streamfs demo``: the main job, in one command.

1. brings the local services up (Kafka, Redis, the schema registry);
2. registers the sample schemas (``avro_schemas/``) and applies ``topology/``;
3. starts two workers, sample producers for purchases and page views at a steady
   rate, and the web server when streamfs has one (``streamfs serve``);
4. prints where to look, and runs until Ctrl-C (or SIGTERM, or ``--duration``).

Stopping stops everything it started, and only that: services that were already
running before the demo (``streamfs services up``) are left running. Each child's
output goes to ``<run dir>/demo/<name>.log``.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from streamfs.services import ServicesManager
from streamfs.settings import ENV_PREFIX, Settings

Progress = Callable[[str], None]


class Demo:
    def __init__(
        self,
        settings: Settings,
        progress: Progress,
        schemas_dir: Path,
        topology_dir: Path,
        rate: float,
        port: int,
    ) -> None:
        self.settings = settings
        self.progress = progress
        self.schemas_dir = schemas_dir
        self.topology_dir = topology_dir
        self.rate = rate
        self.port = port
        self.manager = ServicesManager(settings, progress)
        self.log_dir = settings.resolved_run_dir / "demo"
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.started_services = False
        self.stopping = threading.Event()
        self.env: dict[str, str] = dict(os.environ)

    def run(self, duration_s: float | None = None) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        try:
            self._start()
            if self.stopping.is_set():
                return 0
            self.progress("demo running; press Ctrl-C to stop everything it started")
            deadline = None if duration_s is None else time.monotonic() + duration_s
            while not self.stopping.is_set():
                for name, child in self.children:
                    if child.poll() is not None:
                        self.progress(
                            f"{name} exited with code {child.returncode}; see"
                            f" {self.log_dir / (name + '.log')}; stopping"
                        )
                        return 1
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self.stopping.wait(0.5)
            return 0
        finally:
            self._stop()

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping.set()

    def _start(self) -> None:
        already = self.manager.published_addresses()
        addresses = self.manager.up()
        self.started_services = bool(set(self.manager.published_addresses()) - set(already))
        self.settings = self.settings.with_addresses(addresses)
        self.env.update(addresses)
        for name, value in addresses.items():
            self.progress(f"{name.removeprefix(ENV_PREFIX).lower()}: {value}")
        self.log_dir.mkdir(parents=True, exist_ok=True)

        self.progress(f"registering the schemas in {self.schemas_dir}")
        self._once("schemas", ["schemas", "register", str(self.schemas_dir)])
        self.progress(f"applying the feature definitions in {self.topology_dir}")
        self._once("apply", ["apply", str(self.topology_dir)])
        if self.stopping.is_set():
            return
        for i in (1, 2):
            self._spawn(f"worker-{i}", ["worker", "--name", f"demo-{i}"])
        self._spawn(
            "produce-purchase",
            [
                "produce",
                "--kind",
                "purchase",
                "--rate",
                str(self.rate),
                "--count",
                "0",
                "--entities",
                "500",
                "--seed",
                str(int(time.time())),
            ],
        )
        self._spawn(
            "produce-page_view",
            [
                "produce",
                "--kind",
                "page_view",
                "--rate",
                str(self.rate * 2),
                "--count",
                "0",
                "--entities",
                "500",
                "--seed",
                str(int(time.time()) + 1),
            ],
        )
        self.progress(
            f"two workers and producers running ({self.rate:g} purchases/s); logs in {self.log_dir}"
        )
        if _has_web_server():
            self._spawn("serve", ["serve", "--host", "127.0.0.1", "--port", str(self.port)])
            self.progress(f"web view: http://127.0.0.1:{self.port}/")
        self.progress(
            'read features: .venv/bin/python -c "from streamfs import FeatureStore; '
            "print(FeatureStore().get_online_features('u000001', "
            "['purchase_count_1h', 'purchase_amount_sum_24h']).to_dict())\""
        )

    def _argv(self, args: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "streamfs.cli", *args]

    def _once(self, name: str, args: Sequence[str]) -> None:
        with (self.log_dir / f"{name}.log").open("wb") as log:
            result = subprocess.run(
                self._argv(args), env=self.env, stdout=log, stderr=subprocess.STDOUT, check=False
            )
        if result.returncode != 0:
            tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-2000:]
            raise DemoError(f"`streamfs {' '.join(args)}` failed:\n{tail}")

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        with (self.log_dir / f"{name}.log").open("wb") as log:
            child = subprocess.Popen(
                self._argv(args),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C handling stops it, in order
            )
        self.children.append((name, child))

    def _stop(self) -> None:
        for _name, child in reversed(self.children):
            if child.poll() is None:
                child.terminate()
        for name, child in reversed(self.children):
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            self.progress(f"stopped {name}")
        if self.started_services:
            self.manager.down()


class DemoError(Exception):
    pass


def _has_web_server() -> bool:
    try:
        return importlib.util.find_spec("streamfs.serving.command") is not None
    except ModuleNotFoundError:  # no streamfs.serving package at all
        return False


def run(
    settings: Settings,
    duration_s: float | None,
    schemas_dir: Path,
    topology_dir: Path,
    rate: float,
    port: int,
) -> int:
    def progress(message: str) -> None:
        print(f"demo: {message}", file=sys.stderr, flush=True)

    demo = Demo(settings, progress, schemas_dir, topology_dir, rate, port)
    try:
        return demo.run(duration_s)
    except DemoError as exc:
        progress(str(exc))
        return 1
