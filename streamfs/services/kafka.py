"""The local Apache Kafka broker: fetched from Maven Central once, run in KRaft mode.

``kafka-pom.xml`` beside this file names the version; ``mvn dependency:copy-dependencies``
puts the broker's jars in ``<cache>/kafka-<version>/libs``. Each start runs one
combined broker+controller on two free 127.0.0.1 ports (client and controller
listeners) with a small heap. Storage is formatted with a fresh cluster id the
first time a data directory is used.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from streamfs.errors import ServiceError
from streamfs.services import process

POM = Path(__file__).with_name("kafka-pom.xml")
LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")
_MAVEN_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
MIN_JAVA = 17  # Kafka 4.x brokers need Java 17


def kafka_version() -> str:
    """The broker version, read from the one place it is written: ``kafka-pom.xml``."""
    root = ET.parse(POM).getroot()  # noqa: S314  # our own packaged file, not untrusted input
    node = root.find("m:properties/m:kafka.version", _MAVEN_NS)
    if node is None or not node.text:
        raise ServiceError(f"{POM} has no <kafka.version> property")
    return node.text.strip()


def java_major_version(java: str) -> int:
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, check=True, timeout=30
        ).stderr
    except FileNotFoundError as exc:
        raise ServiceError(
            "Java not found: Kafka needs a JDK 17 or newer on PATH "
            "(Debian: apt-get install openjdk-17-jdk-headless), or set JAVA_HOME"
        ) from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        raise ServiceError(f"cannot read the Java version from `{java} -version`: {out!r}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java(java_home: str | None) -> str:
    java = str(Path(java_home) / "bin" / "java") if java_home else (shutil.which("java") or "java")
    major = java_major_version(java)
    if major < MIN_JAVA:
        raise ServiceError(
            f"{java} is Java {major}; Kafka {kafka_version()} needs Java {MIN_JAVA} or newer"
        )
    return java


def libs_dir(cache_dir: Path) -> Path:
    return cache_dir / f"kafka-{kafka_version()}" / "libs"


def fetch(cache_dir: Path, progress: Callable[[str], None]) -> Path:
    """Download the broker's jars with Maven into the cache, once; returns the jar directory."""
    libs = libs_dir(cache_dir)
    stamp = libs.parent / ".complete"
    if stamp.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            "Maven (mvn) not found: it fetches the Kafka broker from Maven Central. "
            "Install it (Debian: apt-get install maven) or set STREAMFS_KAFKA_BOOTSTRAP "
            "to a running broker"
        )
    progress(f"fetching Apache Kafka {kafka_version()} from Maven Central into {libs.parent}")
    work = libs.parent
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(
        POM, work / "pom.xml"
    )  # mvn writes beside its pom; site-packages may be read-only
    if libs.exists():
        shutil.rmtree(libs)  # a half-finished earlier fetch
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        check=False,
    )
    if result.returncode != 0:
        raise ServiceError(
            f"mvn could not fetch org.apache.kafka:kafka_2.13:{kafka_version()} "
            f"(exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}"
        )
    stamp.write_text(kafka_version())
    return libs


def cluster_id() -> str:
    """A fresh KRaft cluster id: a random UUID in Kafka's URL-safe base64 form.

    Like Kafka's own ``Uuid.randomUuid``, never one starting with ``-``: the storage
    tool would read it as an option (seen: "argument --cluster-id/-t: expected one
    argument", one format in 64).
    """
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):
            return value


def _server_properties(port: int, controller_port: int, log_dirs: Path) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dirs),
        # One broker: every internal topic has one replica, and few partitions start faster.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.retention.hours": "168",
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


def start(
    service_dir: Path,
    cache_dir: Path,
    java_home: str | None,
    heap_mb: int,
    progress: Callable[[str], None],
    ports: tuple[int, int] | None = None,
) -> process.ProcessState:
    """Format storage if new, start the broker, and wait until it answers a metadata request.

    ``ports`` (client, controller) restarts a broker where clients last found it; by
    default two free ports are chosen.
    """
    java = find_java(java_home)
    libs = fetch(cache_dir, progress)
    data_dir = service_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    if ports is None:
        port, controller_port = process.free_port(), process.free_port()
        while controller_port == port:
            controller_port = process.free_port()
    else:
        port, controller_port = ports
    config = service_dir / "server.properties"
    config.write_text(_server_properties(port, controller_port, data_dir))
    classpath = f"{libs}/*"
    log_file = service_dir / "kafka.log"
    jvm = [
        java,
        f"-Xmx{heap_mb}m",
        f"-Xms{min(heap_mb, 128)}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "-cp",
        classpath,
    ]
    if not (data_dir / "meta.properties").exists():
        progress("formatting KRaft storage with a fresh cluster id")
        formatted = subprocess.run(
            [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if formatted.returncode != 0:
            raise ServiceError(
                f"formatting Kafka storage in {data_dir} failed:\n"
                f"{(formatted.stdout + formatted.stderr)[-3000:]}"
            )
    progress(f"starting Kafka {kafka_version()} on 127.0.0.1:{port}")
    proc = process.spawn("kafka", [*jvm, "kafka.Kafka", str(config)], log_file, service_dir)
    address = f"127.0.0.1:{port}"
    process.wait_until_ready("kafka", proc, lambda: healthy(address), log_file, timeout_s=120)
    ticks = process.process_start_ticks(proc.pid)
    assert ticks is not None  # it just answered a request
    return process.ProcessState("kafka", proc.pid, ticks, address, str(log_file), str(data_dir))


def healthy(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when a broker at ``bootstrap`` answers a cluster metadata request."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not process.port_is_open(host, int(port)):
        return False
    return _run_sync(_describe_cluster(bootstrap, timeout_s))


async def _describe_cluster(bootstrap: str, timeout_s: float) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient  # imported here: only health checks need it
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) != -1
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()


def _run_sync(coro: Coroutine[Any, Any, bool]) -> bool:
    """Run a health-check coroutine from sync code, even when called inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
