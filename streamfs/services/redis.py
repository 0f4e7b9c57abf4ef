"""The local Redis server: Debian's ``redis-server`` on a free 127.0.0.1 port, no persistence."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from streamfs.errors import ServiceError
from streamfs.services import process

INSTALL_HINT = (
    "redis-server not found: install Debian's package (apt-get install redis-server) "
    "or set STREAMFS_REDIS_URL to a running Redis"
)


def find_redis_server() -> str:
    # /usr/bin is where Debian puts it; also look there when PATH is minimal.
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    if found is None:
        raise ServiceError(INSTALL_HINT)
    return found


def start(
    service_dir: Path, progress: Callable[[str], None], port: int | None = None
) -> process.ProcessState:
    """Start Redis on ``port`` (default: a free one) and wait until it answers PING."""
    binary = find_redis_server()
    data_dir = service_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = process.free_port() if port is None else port
    log_file = service_dir / "redis.log"
    progress(f"starting Redis on 127.0.0.1:{port}")
    argv = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        # A dev server: nothing written to disk, no background save to fork.
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--logfile",
        "",
    ]
    proc = process.spawn("redis", argv, log_file, service_dir)
    url = f"redis://127.0.0.1:{port}/0"
    process.wait_until_ready("redis", proc, lambda: healthy(url), log_file, timeout_s=30)
    ticks = process.process_start_ticks(proc.pid)
    assert ticks is not None  # it just answered PING
    return process.ProcessState("redis", proc.pid, ticks, url, str(log_file), str(data_dir))


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    import redis  # imported here: only health checks and the online store need it

    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
