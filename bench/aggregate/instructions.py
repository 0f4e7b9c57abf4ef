"""Instructions, not seconds: the tile engine's fold, encode, decode and query under callgrind.

On a shared 2-core machine the wall clock of one function moves by 15-50% from run to
run, far more than most changes to it. ``valgrind --tool=callgrind`` counts the
instructions executed instead, the same count for the same build and data whatever
else the machine does. This script runs itself under callgrind once per function,
collecting only while that function of the compiled build (``streamfs native
build``) runs, over fixed data: 3,000 events of 300 users with the sample topology's
19 purchase aggregations (4 windows, 3 hops), every row folded, encoded and decoded,
and every user's features queried once.

    .venv/bin/python -m bench.aggregate.instructions          # needs valgrind
    .venv/bin/python -m bench.aggregate.instructions --work   # the workload alone

Compare two builds by running it in each checkout (``PYTHONPATH`` at the checkout, its
own ``streamfs/_compiled``). Each function takes about 45 s under callgrind.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# The compiled functions, by the C names mypyc gives them.
FUNCTIONS = {
    "fold (EntityTiles.add_event)": "CPyDef_tiles___EntityTiles___add_event",
    "encode (EntityTiles.encode)": "CPyDef_tiles___EntityTiles___encode",
    "decode (EntityTiles.decode, whole)": "CPyDef_tiles___EntityTiles___decode",
    "query (EntityTiles.query)": "CPyDef_tiles___EntityTiles___query",
}
EVENTS, USERS, START_MS = 3_000, 300, 1_700_000_000_000


def work() -> None:
    """Fold, encode, decode and query the fixed data once each."""
    from bench.ingest.run import bench_view
    from streamfs.plans import ServedView, view_plan
    from streamfs.tiles import EntityTiles

    plan = view_plan(ServedView(bench_view("bench", "sample"), 1))
    layout, inputs = plan.view.layout, plan.inputs
    rng = random.Random(3)  # noqa: S311  # synthetic benchmark data, not secrets
    by_user: dict[str, list[dict[str, Any]]] = {}
    for i in range(EVENTS):
        record: dict[str, Any] = {
            "user_id": f"u{rng.randrange(USERS)}",
            "amount": round(rng.lognormvariate(3, 1), 2),
            "category": rng.choice(["books", "toys", "food", "garden"]),
            "created_at": START_MS + i * 2_000,
        }
        by_user.setdefault(record["user_id"], []).append(record)
    stores = []
    for records in by_user.values():
        tiles = EntityTiles(layout)
        for seq, record in enumerate(records):
            tiles.add_event(record["created_at"], inputs(record), seq)
        stores.append(tiles)
    bodies = [tiles.encode() for tiles in stores]
    decoded = [EntityTiles.decode(layout, body) for body in bodies]
    at_ms = START_MS + EVENTS * 2_000
    for tiles in decoded:
        tiles.query(at_ms)
    rows = sum(len(rows) for tiles in stores for rows in tiles.groups)
    print(f"{EVENTS} events, {len(stores)} users, {rows} rows, {sum(map(len, bodies))} bytes")


def count(function: str) -> int:
    """Instructions executed inside ``function`` while :func:`work` runs under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                f"--toggle-collect={function}",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench.aggregate.instructions",
                "--work",
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        summary = re.search(r"^summary: (\d+)", out.read_text(), re.MULTILINE)
        if summary is None:
            raise RuntimeError(f"callgrind wrote no summary for {function}")
        return int(summary.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", action="store_true", help="run the workload only")
    args = parser.parse_args()
    if args.work:
        work()
        return
    from streamfs import native

    if native.status() != "compiled":
        sys.exit(f"the compiled build is not running ({native.status()}): streamfs native build")
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    for name, function in FUNCTIONS.items():
        print(f"{name:36s} {count(function):>14,} instructions", flush=True)


if __name__ == "__main__":
    main()
