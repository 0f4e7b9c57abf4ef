"""``streamfs demo``: the main job, in one command.

Brings the local services up, registers the sample schemas and streams sample events
into Kafka at a steady rate, printing what it runs and where. Ctrl-C (or SIGTERM)
stops everything it started, and only that: services that were already running
before the demo (``streamfs services up``) are left running.

Later parts of streamfs (workers, the web view) join the demo here as they land.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from streamfs.services import ServicesManager
from streamfs.settings import ENV_PREFIX, Settings

Progress = Callable[[str], None]


class Demo:
    def __init__(self, settings: Settings, progress: Progress, schemas_dir: Path) -> None:
        self.settings = settings
        self.progress = progress
        self.schemas_dir = schemas_dir
        self.manager = ServicesManager(settings, progress)
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.started_services = False
        self.stopping = threading.Event()

    def run(self, duration_s: float | None = None) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        try:
            self._start()
            self.progress("demo running; press Ctrl-C to stop everything it started")
            deadline = None if duration_s is None else time.monotonic() + duration_s
            while not self.stopping.is_set():
                for name, child in self.children:
                    if child.poll() is not None:
                        self.progress(f"{name} exited with code {child.returncode}; stopping")
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
        for name, value in addresses.items():
            self.progress(f"{name.removeprefix(ENV_PREFIX).lower()}: {value}")

    def _stop(self) -> None:
        for name, child in reversed(self.children):
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                self.progress(f"stopped {name}")
        if self.started_services:
            self.manager.down()


def run(settings: Settings, duration_s: float | None, schemas_dir: Path) -> int:
    def progress(message: str) -> None:
        print(f"demo: {message}", file=sys.stderr, flush=True)

    return Demo(settings, progress, schemas_dir).run(duration_s)
