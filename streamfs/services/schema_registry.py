"""The local schema registry: ``streamfs schema-registry`` as a process, stored in Kafka."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from streamfs.errors import ServiceError
from streamfs.services import process


def start(
    service_dir: Path, kafka_bootstrap: str | None, progress: Callable[[str], None]
) -> process.ProcessState:
    if not kafka_bootstrap:
        raise ServiceError("the schema registry needs Kafka, and no Kafka address is known")
    port = process.free_port()
    log_file = service_dir / "schema-registry.log"
    progress(f"starting the schema registry on 127.0.0.1:{port}")
    argv = [
        sys.executable,
        "-m",
        "streamfs.cli",
        "schema-registry",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--kafka-bootstrap",
        kafka_bootstrap,
    ]
    proc = process.spawn("schema-registry", argv, log_file, service_dir)
    url = f"http://127.0.0.1:{port}"
    process.wait_until_ready("schema-registry", proc, lambda: healthy(url), log_file, timeout_s=60)
    ticks = process.process_start_ticks(proc.pid)
    assert ticks is not None  # it just answered
    return process.ProcessState(
        "schema-registry", proc.pid, ticks, url, str(log_file), str(service_dir)
    )


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    """True when ``url`` answers ``GET /subjects`` like a Confluent schema registry."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/subjects", timeout=timeout_s) as resp:  # noqa: S310  # our own http URL
            return resp.status == 200 and isinstance(json.loads(resp.read()), list)
    except (urllib.error.URLError, OSError, ValueError):
        return False
