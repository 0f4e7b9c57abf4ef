"""Online serving benchmark: streamfs's HTTP server and SDK against Feast's feature server.

    .venv/bin/python bench/online/run.py [--duration 10] [--append bench/RESULTS.md]

Setup: a private registry topic and Redis namespace holding one view of 10 features
(count, sum, mean, max, min of ``amount`` over 1 h and 24 h) for ``--entities`` users,
whose tiles are written straight to Redis (20 events each in the last 50 minutes;
no worker needed to measure reads). The same values, read back with the SDK, are
written to Feast's Redis layout on the same Redis (``feast_side.py``, run with the
Feast virtualenv ``--feast-python``, which needs ``feast[redis]``).

Measured, each server in its own process and the load generator (``wrk``) in another:

- one entity x 10 features, HTTP ``GET`` p50/p99 at concurrency 1 and requests/s at
  concurrency 16 (streamfs ``GET /v1/features/online/{view}/{entity}``; Feast
  ``POST /get-online-features``, its only read route);
- random entities (every read a different one of ``--entities``), c=1 and c=16, with
  the server's value cache and with it off (``--value-cache 0``: every read decodes);
- a batch of 100 entities x 10 features per request, concurrency 1;
- the SDK in this process (``FeatureStore.get_online_features``), p50/p99 of one entity;
- the server's CPU time per request at c=16 (``/proc``), steadier than requests/s on
  a shared machine, and the floor: a bare aiohttp server answering a fixed row
  (``floor.py``), i.e. what this machine allows any Python server at that moment;
- the load average before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis

from streamfs.cli import resolve_settings
from streamfs.definitions import Aggregation, Entity, FeatureView
from streamfs.definitions.compile import compile_view
from streamfs.online import online_key
from streamfs.settings import ENV_PREFIX
from streamfs.store import FeatureStore
from streamfs.tiles import EntityTiles

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from topology.sources import purchases  # noqa: E402  # the sample source, after sys.path

VIEW = "user_purchases"
FUNCTIONS = (("count", None), ("sum", "amount"), ("mean", "amount"), ("max", "amount"),
             ("min", "amount"))  # fmt: skip


def _features() -> list[Aggregation]:
    out = []
    for window in ("1h", "24h"):
        for function, column in FUNCTIONS:
            name = (
                f"purchase_{function}_{window}"
                if column is None
                else (f"amount_{function}_{window}")
            )
            out.append(Aggregation(name, function, column, window=window))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  # our http URL
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout_s}s")


_UNITS = {"us": 1.0, "ms": 1_000.0, "s": 1_000_000.0}

# ``--pin``: each server on one CPU, ``wrk`` on another (``taskset``), so that the load
# generator never takes the server's core mid-request. Empty: the scheduler decides.
SERVER_CPU: list[str] = []
LOAD_CPU: list[str] = []


def wrk(
    url: str,
    connections: int,
    duration_s: int,
    body: str | None = None,
    paths: list[str] | None = None,
) -> dict[str, float]:
    """``wrk`` against ``url`` (one thread), POSTing ``body`` or GETting a random one of
    ``paths`` per request; p50/p99 in µs and requests/s."""
    script = None
    args = [*LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", url]
    lua = ""
    if body is not None:
        lua = (
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body)}\n"
        )
    if paths:
        listed = ",".join(json.dumps(p) for p in paths)
        lua = (
            f"local paths = {{{listed}}}\n"
            "request = function() return wrk.format(nil, paths[math.random(#paths)]) end\n"
        )
    if lua:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(lua)
        args[len(LOAD_CPU) + 1 : len(LOAD_CPU) + 1] = ["-s", script.name]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    if script is not None:
        os.unlink(script.name)
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{url}: {non2xx.group(1)} error responses\n{out}")

    def us(text: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
        return float(number) * _UNITS[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"p50_us": us(lat["50"]), "p99_us": us(lat["99"]), "rps": rps, "requests": requests}


ROUTE = "/v1/features/online/{view}/{entity}"


def latency_buckets(base: str) -> dict[float, float]:
    """The server's own latency histogram for the one-entity route: bucket bound (s) ->
    requests answered within it so far, from ``/metrics``."""
    with urllib.request.urlopen(f"{base}/metrics") as response:  # noqa: S310  # our http URL
        text = response.read().decode()
    pattern = r'duration_seconds_bucket\{le="([^"]+)",route="' + re.escape(ROUTE) + r'"\} (\S+)'
    return {float(le): float(n) for le, n in re.findall(pattern, text)}


def server_p99_us(before: dict[float, float], after: dict[float, float]) -> float:
    """The smallest histogram bound that 99% of the requests between two snapshots
    were answered within, in µs: the server's own p99, from handler entry to response."""
    total = after[float("inf")] - before.get(float("inf"), 0.0)
    for bound in sorted(after):
        if after[bound] - before.get(bound, 0.0) >= 0.99 * total:
            return bound * 1e6
    return float("inf")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A server in its own process group, so that stopping it stops its children too."""
    return subprocess.Popen(
        [*SERVER_CPU, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def _stop(server: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)
    with contextlib.suppress(ProcessLookupError):  # a child that outlived its parent
        os.killpg(server.pid, signal.SIGKILL)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk phase")
    parser.add_argument("--sdk-calls", type=int, default=5_000)
    parser.add_argument("--feast-python", default=str(REPO / "bench/.venv-feast/bin/python"))
    parser.add_argument("--skip-feast", action="store_true")
    parser.add_argument("--append", type=Path, default=None, help="append results here")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="servers on the last CPU, wrk on the first (taskset); needs 2 CPUs or more",
    )
    args = parser.parse_args()
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or shutil.which("taskset") is None:
            raise SystemExit("--pin needs two CPUs and taskset (util-linux)")
        SERVER_CPU[:] = ["taskset", "-c", str(cpus[-1])]
        LOAD_CPU[:] = ["taskset", "-c", str(cpus[0])]
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")

    token = f"bench-online-{int(time.time())}"
    settings = dataclasses.replace(
        resolve_settings(os.environ), registry_topic=f"{token}-registry", namespace=token
    )
    if not settings.redis_url:
        raise SystemExit("no Redis: run `streamfs services up` first")
    user = Entity("user", ("user_id",))
    view = FeatureView(VIEW, user, purchases, tuple(_features()))
    store = FeatureStore(settings, who="bench")
    store.apply([user, purchases, view])
    names = [n for f in _features() for n in f.output_names()]

    # Tiles straight into Redis, as the worker would write them.
    compiled = compile_view(view)
    client = redis.Redis.from_url(settings.redis_url)
    now = time.time_ns() // 1_000_000
    rng = random.Random(7)  # noqa: S311  # test data, not secrets
    users = [f"u{i:06d}" for i in range(args.entities)]
    pipe = client.pipeline(transaction=False)
    for i, u in enumerate(users):
        tiles = EntityTiles(compiled.layout)
        times = sorted(now - rng.randrange(50 * 60_000) for _ in range(20))
        for t in times:
            tiles.add_event(t, compiled.inputs({"amount": round(rng.uniform(1, 300), 2)}))
        key = online_key(VIEW, 1, u, settings.namespace)
        pipe.hset(key, mapping={"o": 1, "t": tiles.encode(), "e": times[-1], "w": now})
        pipe.pexpire(key, 3_600_000)
        if i % 1_000 == 999:
            pipe.execute()
    pipe.execute()
    ours = store.get_online_features(users, names)
    assert isinstance(ours, list)
    values = {row.entity_key: row.values for row in ours}

    results: dict[str, Any] = {}
    env = os.environ | {
        ENV_PREFIX + "REGISTRY_TOPIC": settings.registry_topic,
        ENV_PREFIX + "NAMESPACE": settings.namespace,
        ENV_PREFIX + "REDIS_URL": settings.redis_url,
        ENV_PREFIX + "KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        ENV_PREFIX + "SCHEMA_REGISTRY_URL": settings.schema_registry_url or "",
    }
    results["load_before"] = os.getloadavg()
    port = _free_port()
    serve = [sys.executable, str(REPO / "bench/online/serve.py"), "--port", str(port)]
    server = _start(serve, env)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/readyz")
        one = f"{base}/v1/features/online/{VIEW}/{users[0]}?features={','.join(names)}"
        with urllib.request.urlopen(one) as response:  # noqa: S310  # our own http URL
            served = json.loads(response.read())["features"]
        assert served == values[users[0]], (served, values[users[0]])
        wrk(one, 1, 2)  # warm-up
        buckets = latency_buckets(base)
        results["streamfs_c1"] = wrk(one, 1, args.duration)
        results["streamfs_c1"]["server_p99_us"] = server_p99_us(buckets, latency_buckets(base))
        before = cpu_s(server.pid)
        results["streamfs_c16"] = wrk(one, 16, args.duration)
        results["streamfs_c16"]["cpu_us"] = (
            (cpu_s(server.pid) - before) * 1e6 / results["streamfs_c16"]["requests"]
        )
        # Random entities: each read a different entity (the value cache fills as it goes).
        paths = [f"/v1/features/online/{VIEW}/{u}?features={','.join(names)}" for u in users]
        results["streamfs_random_c1"] = wrk(base, 1, args.duration, paths=paths)
        results["streamfs_random_c16"] = wrk(base, 16, args.duration, paths=paths)
        batch = json.dumps({"entities": users[:100], "features": names})
        results["streamfs_batch100"] = wrk(f"{base}/v1/features/online", 1, args.duration, batch)
    finally:
        _stop(server)
    # The same server with no value cache: every read decodes its entity's tiles.
    server = _start([*serve, "--value-cache", "0"], env)
    try:
        _wait_http(f"{base}/readyz")
        wrk(base, 16, 2, paths=paths)  # warm-up
        results["streamfs_nocache_random_c16"] = wrk(base, 16, args.duration, paths=paths)
    finally:
        _stop(server)
    server = _start([sys.executable, str(REPO / "bench/online/floor.py"), "--port", str(port)])
    try:
        _wait_http(f"{base}/healthz")
        wrk(one, 1, 2)  # warm-up
        results["floor_c1"] = wrk(one, 1, args.duration)
        results["floor_c16"] = wrk(one, 16, args.duration)
    finally:
        _stop(server)

    for _ in range(500):  # warm-up
        store.get_online_features(users[0], names)
    samples = []
    for i in range(args.sdk_calls):
        start = time.perf_counter_ns()
        store.get_online_features(users[i % len(users)], names)
        samples.append((time.perf_counter_ns() - start) / 1_000)
    results["sdk"] = {
        "p50_us": percentile(samples, 0.5),
        "p99_us": percentile(samples, 0.99),
        "mean_us": statistics.fmean(samples),
    }
    batch_samples = []
    for i in range(500):
        start = time.perf_counter_ns()
        store.get_online_features(users[(i * 100) % (len(users) - 100) :][:100], names)
        batch_samples.append((time.perf_counter_ns() - start) / 1_000)
    results["sdk_batch100"] = {
        "p50_us": percentile(batch_samples, 0.5),
        "p99_us": percentile(batch_samples, 0.99),
    }

    if not args.skip_feast:
        results.update(_feast(args, settings.redis_url, values, names, users))
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    if args.append:
        with args.append.open("a") as out:
            out.write(_markdown(results, args))


def _feast(
    args: argparse.Namespace,
    redis_url: str,
    values: dict[Any, dict[str, Any]],
    names: list[str],
    users: list[str],
) -> dict[str, Any]:
    url = urlparse(redis_url)
    db = (url.path or "/0").strip("/") or "0"
    repo = Path(tempfile.mkdtemp(prefix="feast-online-"))
    values_file = repo / "values.json"
    values_file.parent.mkdir(parents=True, exist_ok=True)
    values_file.write_text(json.dumps({str(k): v for k, v in values.items()}))
    out = subprocess.run(
        [args.feast_python, str(REPO / "bench/online/feast_side.py"), str(repo / "repo"),
         f"{url.hostname}:{url.port},db={db}", str(values_file)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    theirs = json.loads(out.strip().splitlines()[-1])
    mine = values[theirs["entity"]]
    for name in names:
        a, b = mine[name], theirs["values"][name]
        assert (a is None and b is None) or abs(float(a) - float(b)) < 1e-9, (name, a, b)
    feast = str(Path(args.feast_python).with_name("feast"))
    port = _free_port()
    server = subprocess.Popen(
        [*SERVER_CPU, feast, "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log"],
        cwd=repo / "repo", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # its worker process goes down with it (_stop)
    )  # fmt: skip
    results: dict[str, Any] = {}
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/health", 120)
        feats = [f"{VIEW}:{n}" for n in names]
        one = json.dumps({"features": feats, "entities": {"user_id": [users[0]]}})
        wrk(f"{base}/get-online-features", 1, 2, one)  # warm-up
        results["feast_c1"] = wrk(f"{base}/get-online-features", 1, args.duration, one)
        results["feast_c16"] = wrk(f"{base}/get-online-features", 16, args.duration, one)
        batch = json.dumps({"features": feats, "entities": {"user_id": users[:100]}})
        results["feast_batch100"] = wrk(f"{base}/get-online-features", 1, args.duration, batch)
    finally:
        _stop(server)
    return results


def _markdown(r: dict[str, Any], args: argparse.Namespace) -> str:
    def cell(key: str, field: str | None) -> str:
        if key not in r:
            return "-"
        if field is None:
            return f"{r[key]['rps']:,.0f}"
        return f"{r[key][field]:,.0f} µs"

    rows = (
        ("1 entity x 10, c=1, p50", "streamfs_c1", "feast_c1", "floor_c1", "p50_us"),
        ("1 entity x 10, c=1, p99", "streamfs_c1", "feast_c1", "floor_c1", "p99_us"),
        ("1 entity x 10, c=1, p99 inside the server (≤)", "streamfs_c1", "-", "-", "server_p99_us"),
        ("1 entity x 10, c=16, req/s", "streamfs_c16", "feast_c16", "floor_c16", None),
        ("1 entity x 10, c=16, p99", "streamfs_c16", "feast_c16", "floor_c16", "p99_us"),
        ("1 entity x 10, c=16, server CPU a request", "streamfs_c16", "-", "-", "cpu_us"),
        ("random entity x 10, c=1, p50", "streamfs_random_c1", "-", "-", "p50_us"),
        ("random entity x 10, c=1, p99", "streamfs_random_c1", "-", "-", "p99_us"),
        ("random entity x 10, c=16, req/s", "streamfs_random_c16", "-", "-", None),
        ("random, no value cache, c=16, req/s", "streamfs_nocache_random_c16", "-", "-", None),
        ("100 entities x 10, c=1, p50", "streamfs_batch100", "feast_batch100", "-", "p50_us"),
        ("100 entities x 10, c=1, p99", "streamfs_batch100", "feast_batch100", "-", "p99_us"),
        ("SDK, 1 entity x 10, p50", "sdk", "-", "-", "p50_us"),
        ("SDK, 1 entity x 10, p99", "sdk", "-", "-", "p99_us"),
        ("SDK, 100 entities x 10, p50", "sdk_batch100", "-", "-", "p50_us"),
    )
    ratio = r["streamfs_c16"]["rps"] / r["feast_c16"]["rps"] if "feast_c16" in r else None
    load = " / ".join(
        f"{when} {', '.join(f'{x:.2f}' for x in r[key])}"
        for when, key in (("before", "load_before"), ("after", "load_after"))
        if key in r
    )
    return (
        f"\n## Online serving — `bench/online/run.py`\n\n"
        f"{datetime.now(UTC):%Y-%m-%d}. One server process each on the same Redis, with the"
        f" same values ({args.entities:,} users, one view of 10 features); `wrk` (one thread)"
        f" as the load generator in its own process, {args.duration} s per phase;"
        f" Python {platform.python_version()}. Feast's `feast serve` (one worker) answers"
        " `POST /get-online-features`; streamfs `GET /v1/features/online/{view}/{entity}`"
        " (batch: `POST /v1/features/online`). Values checked equal before timing. Floor:"
        " a bare aiohttp server answering a fixed row (`floor.py`), what the machine allows"
        f" any Python server in the same minutes. Load average (1, 5, 15 min): {load}."
        + (
            f" Pinned (`--pin`): servers on CPU {SERVER_CPU[-1]}, `wrk` on CPU {LOAD_CPU[-1]}."
            if args.pin
            else ""
        )
        + "\n\n"
        "| measure | streamfs | Feast | floor |\n|---|---|---|---|\n"
        + "".join(
            f"| {label} | {cell(ours, field)} | {cell(theirs, field)} | {cell(floor, field)} |\n"
            for label, ours, theirs, floor, field in rows
        )
        + (f"\nThroughput ratio at c=16: **{ratio:.1f}x** Feast.\n" if ratio else "")
    )


if __name__ == "__main__":
    main()
