"""The offline log written by a child process: the worker's second core at work.

Writing a batch to the offline log (:class:`~streamfs.offline.log.OfflineSink`:
the events as Arrow columns, each touched entity's feature snapshot valued from
its tiles, Parquet encoding) took about 30% of a worker's CPU, all of it under the
worker's GIL. :class:`OfflineProcess` runs the sink in a fresh interpreter of its
own (``python -m streamfs.offline.process``, so nothing of the worker's Kafka
clients, threads or event loop is copied into it) and hands it each batch over a
socket pair: events and online writes (their encoded tiles) as pickled tuples,
snapshot views as their definitions; the child decodes the tiles again, since live
objects cannot cross. The worker processes its next batch while the child writes
this one (see :mod:`streamfs.worker`).

One request is in flight at a time, answered in order: a batch's paths, or the
error that stopped it (raised here as :class:`OfflineWriteError` naming the
child's exception). A child that dies fails the request it had and every one after
it with an error that gives its exit code; the batch is then not committed and the
worker's restart replays it. The child stops when asked (:meth:`OfflineProcess.close`
flushes first) or when the worker dies: its end of the socket reads EOF. It ignores
SIGINT and SIGTERM, which a terminal or a supervisor may send to the whole process
group: the worker's shutdown stops it after the last flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import pyarrow as pa
import structlog
from prometheus_client import CollectorRegistry

from streamfs.cycles import DEFAULT_INTERVAL_S, CycleCollector
from streamfs.definitions import Source
from streamfs.definitions.codec import view_from_json
from streamfs.ingest import Event
from streamfs.offline.log import OfflineSink, OfflineWriteError
from streamfs.offline.rolling import RollPolicy
from streamfs.offline.snapshots import SnapshotView
from streamfs.online import DEFAULT_NAMESPACE, OnlineWrite

log = structlog.get_logger(__name__)

# glibc malloc for the child: a fixed mmap threshold, so every large buffer (Arrow
# columns, Parquet pages, a merge's inputs) is unmapped when freed instead of raising the
# threshold and staying in the heap; and few arenas for its two threads.
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 << 10), "MALLOC_ARENA_MAX": "2"}

CHILD_NICENESS = 10
"""How much the child lowers its scheduling priority (``os.nice``) below its worker's.

A batch's values go online before its offline write starts, so only the worker's
event loop stands between an event and its freshness; the child needs CPU on
average (about half a core at 5,000 events/s), not at once. Where the two compete for
a core, the scheduler now serves the worker first and the child takes the slack,
falling behind by at most the worker's pipeline depth. Measured (freshness bench,
5,000 events/s, twelve alternating pairs of 40 s runs on 2 cores): p99 lower in ten
of twelve pairs, median p99 587 ms against 738; ingest throughput unchanged."""


class OfflineProcess:
    """An :class:`OfflineSink` at ``root`` in a child process, driven from an event loop.

    Not thread-safe, and one call at a time: each call waits for the previous one's
    answer before it sends (the worker's pipeline never has two batches here).
    """

    def __init__(
        self,
        root: str,
        *,
        policy: RollPolicy | None = None,
        compression: str = "zstd",
        gc_interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        """``gc_interval_s``: the child's cyclic collector runs on that schedule only, as
        the worker's does (:mod:`streamfs.cycles`); 0 leaves it to CPython's."""
        if gc_interval_s < 0:
            raise ValueError(f"gc_interval_s must be 0 or more, got {gc_interval_s}")
        self.root = root
        ours, theirs = socket.socketpair()
        # A fresh interpreter (not multiprocessing's spawn, which re-imports the parent's
        # __main__: a console script, ``python -m faust``) given its end of the pair.
        self._process = subprocess.Popen(
            [sys.executable, "-m", "streamfs.offline.process", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env={**os.environ, **_MALLOC_ENV},
        )
        theirs.close()  # the child holds the only other end: EOF there when we die
        self._conn = Connection(ours.detach())
        self._conn.send((root, policy or RollPolicy(), compression, gc_interval_s))
        self._reply: asyncio.Future[Any] | None = None  # the request in flight's
        self._reading: asyncio.AbstractEventLoop | None = None  # where our reader is
        self._closed = False

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The child's exit code once it exited (negative: killed by that signal)."""
        return self._process.poll()

    async def write_batch(
        self,
        source: Source,
        events: Sequence[Event],
        writes: Sequence[OnlineWrite] = (),
        views: Sequence[SnapshotView] = (),
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> list[str]:
        """:meth:`OfflineSink.write_batch` in the child; returns the paths it wrote."""
        if not events:
            return []
        # As plain tuples: a slots dataclass pickles through a Python-level __getstate__,
        # about 3x slower (a few % of the worker's CPU at 10,000 events a batch).
        request = (
            "batch",
            source,
            [(e.entity_key, e.event_time_ms, e.record, e.partition, e.offset) for e in events],
            [(w.key, w.offset, w.tiles, w.last_event_time_ms, w.ttl_ms) for w in writes],
            # A snapshot view holds compiled closures, which don't pickle: its definition.
            [(v.definition, v.version) for v in views],
            namespace,
        )
        paths: list[str] = await self._call(request)
        return paths

    async def flush(self) -> list[str]:
        """:meth:`OfflineSink.flush` in the child (merge and close the open segments)."""
        paths: list[str] = await self._call(("flush",))
        return paths

    async def close(self) -> None:
        """Flush, stop the child and wait for it (at most 30 s, then kill it)."""
        if self._closed:
            return
        try:
            if self._process.poll() is None:
                await self._call(("stop",))
        finally:
            self._closed = True
            if self._reading is not None:
                self._reading.remove_reader(self._conn.fileno())
                self._reading = None
            self._conn.close()
            try:
                await asyncio.to_thread(self._process.wait, 30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                await asyncio.to_thread(self._process.wait)

    async def _call(self, request: tuple[Any, ...]) -> Any:
        if self._closed:
            raise OfflineWriteError("the offline writer process is closed")
        # One request in flight: the child reads the next only when it answered this one,
        # and a send to a busy child would block the event loop on a full pipe.
        while self._reply is not None and not self._reply.done():
            await asyncio.wait([self._reply])
        loop = asyncio.get_running_loop()
        if self._reading is None:
            loop.add_reader(self._conn.fileno(), self._receive)
            self._reading = loop
        reply: asyncio.Future[Any] = loop.create_future()
        # A caller cancelled while it waits leaves the reply to come; nobody reads it then.
        reply.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._reply = reply
        try:
            self._conn.send(request)
        except (OSError, ValueError) as exc:
            error = self._gone()
            reply.set_exception(error)
            raise error from exc
        return await asyncio.shield(reply)

    def _receive(self) -> None:
        reply = self._reply
        try:
            status, payload = self._conn.recv()
        except (EOFError, OSError):
            if self._reading is not None:
                self._reading.remove_reader(self._conn.fileno())
                self._reading = None
            if reply is not None and not reply.done():
                reply.set_exception(self._gone())
            return
        if reply is None or reply.done():
            log.error("offline_reply_unexpected", status=status)
            return
        if status == "ok":
            reply.set_result(payload)
        else:
            reply.set_exception(OfflineWriteError(f"offline log: {payload}"))

    def _gone(self) -> OfflineWriteError:
        try:
            code: int | str = self._process.wait(1)
        except subprocess.TimeoutExpired:
            code = "none yet"
        return OfflineWriteError(f"the offline writer process exited (exit code {code})")


@functools.lru_cache(maxsize=64)
def _compiled(definition: str, state_version: int) -> SnapshotView:
    """The snapshot view of a definition (JSON text) and state version, compiled once."""
    return SnapshotView.of(view_from_json(json.loads(definition)), state_version)


def _lower_priority(by: int) -> None:
    """``os.nice(by)`` for every thread of this process, the ones to come included.

    Linux keeps a priority per thread (``os.nice`` changes the caller's, and a new
    thread inherits its creator's), and importing pyarrow started threads already.
    """
    niceness = min(os.getpriority(os.PRIO_PROCESS, 0) + by, 19)
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except FileNotFoundError:  # no /proc: one priority for the whole process
        threads = [0]
    for tid in threads:
        with contextlib.suppress(ProcessLookupError):  # a thread that ended since
            os.setpriority(os.PRIO_PROCESS, tid, niceness)


def _serve(conn: Connection) -> None:
    """The child: answer requests until told to stop or the worker's end closes."""
    # A Ctrl-C or a TERM sent to the worker's process group is the worker's to handle:
    # its shutdown flushes this sink and then stops it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _lower_priority(CHILD_NICENESS)
    try:
        root, policy, compression, gc_interval_s = conn.recv()
    except (EOFError, OSError):
        return
    # Valuing snapshots makes and drops tens of thousands of containers a batch, none in
    # cycles: CPython's young collections walked them for about 6% of the child's CPU
    # (2026-11-28). Collect on a schedule instead, between requests.
    cycles = None
    if gc_interval_s:
        cycles = CycleCollector(gc_interval_s, registry=CollectorRegistry())
        cycles.install()
    next_collection = time.monotonic() + gc_interval_s
    # Arrow's default pool (mimalloc) kept the peak of every batch and merge resident.
    pa.set_memory_pool(pa.system_memory_pool())
    sink = OfflineSink(root, compression, policy=policy, background_merges=True)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the worker died: what it did not commit, its restart replays
        kind = request[0]
        try:
            if kind == "batch":
                _, source, event_rows, write_rows, refs, namespace = request
                events = [Event(*row) for row in event_rows]
                writes = [OnlineWrite(*row) for row in write_rows]
                views = [_compiled(definition, version) for definition, version in refs]
                result: Any = sink.write_batch(source, events, writes, views, namespace=namespace)
            elif kind in ("flush", "stop"):
                result = sink.flush()
            else:
                raise ValueError(f"unknown request {kind!r}")
        except Exception as exc:
            log.error("offline_write_failed", error=repr(exc), trace=traceback.format_exc())
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        conn.send(("ok", result))
        if kind == "stop":
            return
        if cycles is not None and time.monotonic() >= next_collection:
            cycles.collect()
            next_collection = time.monotonic() + gc_interval_s


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
