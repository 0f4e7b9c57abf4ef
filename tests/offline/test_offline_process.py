"""The offline log written by a child process: the same files as in the worker's own
process, errors that name their cause, and a child that never outlives its worker."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from streamfs.offline.log import OfflineSink, OfflineWriteError
from streamfs.offline.process import CHILD_NICENESS, OfflineProcess
from streamfs.offline.snapshots import SnapshotView, snapshot_table
from tests.offline.helpers import random_events, rich_view
from tests.offline.test_snapshots import NS, engine_writes


def relative(paths: list[str], root: Path) -> list[str]:
    return sorted(str(Path(p).relative_to(root)) for p in paths)


async def test_the_child_writes_the_files_an_in_process_sink_writes(tmp_path: Path) -> None:
    view = rich_view()
    spec = SnapshotView.of(view, 3)
    events = random_events(random.Random(5), 200)
    writes = engine_writes(view, 3, events)
    child = OfflineProcess(str(tmp_path / "child"))
    try:
        paths = await child.write_batch(view.source, events, writes, [spec], namespace=NS)
    finally:
        await child.close()
    assert child.returncode == 0
    local = OfflineSink(str(tmp_path / "local"))
    local_events = local.write(view.source, events)

    event_files = [p for p in paths if "/source=" in p]
    assert relative(event_files, tmp_path / "child") == relative(local_events, tmp_path / "local")
    for ours, theirs in zip(sorted(event_files), sorted(local_events), strict=True):
        assert pq.read_table(ours).equals(pq.read_table(theirs))
    # Snapshots: one row per touched entity, valued as an online read at the child's
    # write time (recomputed here from the same writes, at that time).
    (snapshot_file,) = [p for p in paths if "/view=" in p]
    snapshots = pq.read_table(snapshot_file)
    assert snapshots.num_rows == len({e.entity_key for e in events})
    (write_time,) = set(snapshots.column("_write_time_ms").to_pylist())
    assert snapshots.equals(snapshot_table(spec, events, writes, write_time, NS))


async def test_a_failed_batch_names_its_cause_and_the_child_serves_the_next(
    tmp_path: Path,
) -> None:
    view = rich_view()
    events = random_events(random.Random(6), 20)
    bad = [
        *events[:5],
        replace(events[5], record={**events[5].record, "amount": "lots"}),
        *events[6:],
    ]
    child = OfflineProcess(str(tmp_path))
    try:
        with pytest.raises(OfflineWriteError, match="lots"):
            await child.write_batch(view.source, bad)
        assert await child.write_batch(view.source, events)
    finally:
        await child.close()


async def test_the_child_runs_below_its_worker_s_priority(tmp_path: Path) -> None:
    view = rich_view()
    child = OfflineProcess(str(tmp_path))
    try:
        assert await child.write_batch(view.source, random_events(random.Random(8), 10))
        expected = min(os.getpriority(os.PRIO_PROCESS, 0) + CHILD_NICENESS, 19)
        # Every thread of the child, those started before it lowered its priority too
        # (Linux keeps one per thread).
        threads = os.listdir(f"/proc/{child.pid}/task")
        assert len(threads) > 1
        assert {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in threads} == {expected}
    finally:
        await child.close()


@pytest.mark.parametrize(("interval_s", "least"), [(0.2, 2), (0.0, 0)])
async def test_the_child_collects_cycles_on_its_worker_s_schedule(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], interval_s: float, least: int
) -> None:
    view = rich_view()
    child = OfflineProcess(str(tmp_path), gc_interval_s=interval_s)
    try:
        for seed in range(5):  # a collection is due after a request, once the interval passed
            assert await child.write_batch(view.source, random_events(random.Random(seed), 10))
            await asyncio.sleep(0.25)
    finally:
        await child.close()
    out, err = capfd.readouterr()  # the child writes its log to the worker's own streams
    collections = (out + err).count("cycles_collected")
    assert collections >= least if least else collections == 0


def test_a_negative_collection_interval_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gc_interval_s must be 0 or more, got -1"):
        OfflineProcess(str(tmp_path), gc_interval_s=-1)


async def test_a_child_that_died_fails_the_batch_with_its_exit_code(tmp_path: Path) -> None:
    view = rich_view()
    child = OfflineProcess(str(tmp_path))
    try:
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        with pytest.raises(OfflineWriteError, match="exit code -9"):
            await child.write_batch(view.source, random_events(random.Random(7), 10))
    finally:
        await child.close()


PARENT = """
import asyncio, random, sys
from streamfs.offline.process import OfflineProcess
from tests.offline.helpers import random_events, rich_view

async def main():
    child = OfflineProcess(sys.argv[1])
    view = rich_view()
    await child.write_batch(view.source, random_events(random.Random(8), 10))
    print(child.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_the_child_ignores_the_terminal_and_ends_with_its_worker(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        # A Ctrl-C or TERM to the whole process group is the worker's to handle.
        os.kill(child_pid, signal.SIGINT)
        os.kill(child_pid, signal.SIGTERM)
        time.sleep(0.5)
        assert _alive(child_pid)
        parent.kill()  # the worker dies without a word: the child reads EOF and exits
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child_pid)
    finally:
        parent.kill()
        parent.wait()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not reaped by its dead parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
