"""The compiled build of the per-event modules: in use while it matches its source, never stale.

``scripts/setup.sh`` builds it (``streamfs native build``); these tests run on what it
built. The rest of the suite runs on the compiled modules wherever the build exists,
and :func:`test_the_engine_tests_pass_as_plain_python` runs the engine's own tests
once more on the plain Python, which is what a machine without a C compiler runs.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import streamfs.tiles
from streamfs import native

ROOT = Path(__file__).resolve().parents[1]
BUILT = (native.COMPILED_DIR / native.MANIFEST).exists()
needs_build = pytest.mark.skipif(not BUILT, reason="no compiled build (streamfs native build)")


def _printed(code: str, package_parent: Path, env: dict[str, str] | None = None) -> str:
    """What ``code`` prints in a fresh interpreter importing streamfs from ``package_parent``."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(package_parent), **(env or {})},
        cwd=package_parent,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _loaded_from(package_parent: Path, env: dict[str, str] | None = None) -> str:
    """Where ``streamfs.tiles`` loads from in a fresh interpreter."""
    return _printed("import streamfs.tiles as t; print(t.__file__)", package_parent, env)


@pytest.mark.skipif(
    shutil.which("cc") is None or os.environ.get(native.PURE_ENV, "") not in ("", "0"),
    reason="no C compiler here, or plain Python asked for",
)
def test_the_compiled_modules_are_in_use_where_a_compiler_is() -> None:
    assert native.status() == "compiled", "run `streamfs native build` (scripts/setup.sh does)"
    for name in native.MODULES:
        assert native.is_compiled(importlib.import_module(name))
    assert streamfs.tiles.__file__.startswith(str(native.COMPILED_DIR))


@needs_build
def test_an_edited_module_runs_as_plain_python(tmp_path: Path) -> None:
    copy = tmp_path / "streamfs"
    shutil.copytree(native.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert _loaded_from(tmp_path).endswith(".so")
    assert _loaded_from(tmp_path, {native.PURE_ENV: "1"}) == str(copy / "tiles.py")

    # One changed line in any compiled module: all of them run from their source.
    aggregators = copy / "aggregators.py"
    aggregators.write_text(aggregators.read_text() + "\n# edited\n")
    assert _loaded_from(tmp_path) == str(copy / "tiles.py")
    status = _printed("from streamfs import native; print(native.status())", tmp_path)
    assert "stale: streamfs.aggregators changed since the build" in status


def test_the_engine_tests_pass_as_plain_python() -> None:
    """The property and unit tests of the per-event modules, on their plain source."""
    files = [
        "tests/test_statecodec.py",
        "tests/test_windows.py",
        "tests/test_aggregators.py",
        "tests/test_tiles.py",
        "tests/test_engine.py",
    ]
    check = "import streamfs.tiles as t; assert t.__file__.endswith('.py'), t.__file__"
    env = {**os.environ, native.PURE_ENV: "1"}
    subprocess.run([sys.executable, "-c", check], env=env, cwd=ROOT, check=True)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
