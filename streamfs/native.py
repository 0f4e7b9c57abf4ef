"""Compiled builds of the per-event modules, used only while they match their source.

The worker spends most of its own time in a few pure modules: folding events into
tiles, encoding and decoding them, merging windows. ``streamfs native build``
compiles those modules to C extensions with mypyc (it ships with mypy) from
the very same source, into ``streamfs/_compiled/``, next to a list of the SHA-256 of
every source file it compiled.

Importing :mod:`streamfs` calls :func:`activate`: when every listed source still has
its hash, the directory goes first on the package's ``__path__``, so
``import streamfs.tiles`` loads the extension; otherwise nothing changes and the
plain Python runs. So an edited module never runs as its stale build (the modules
call each other's compiled code directly, so it is all of them or none), and a
machine without a C compiler runs the same code, only slower. ``STREAMFS_PURE=1``
keeps the plain Python even when the build matches (A/B benchmarks, debugging).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import MutableSequence
from pathlib import Path

MODULES = (
    "streamfs.statecodec",
    "streamfs.windows",
    "streamfs.sketches",
    "streamfs.aggregators",
    "streamfs.tiles",
)
"""What is compiled: pure, fully typed, and where the worker's per-event time goes."""

PACKAGE_DIR = Path(__file__).resolve().parent
COMPILED_DIR = PACKAGE_DIR / "_compiled"
MANIFEST = "sources.json"
GROUP = "streamfs._native"  # the shared library mypyc builds: streamfs/_native__mypyc*.so
PURE_ENV = "STREAMFS_PURE"


class NativeBuildError(Exception):
    """The compiled build failed; the plain Python modules stay in use."""


def source_path(module: str) -> Path:
    return PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")


def source_hashes() -> dict[str, str]:
    """The SHA-256 of each compiled module's source as it is now."""
    return {m: hashlib.sha256(source_path(m).read_bytes()).hexdigest() for m in MODULES}


def status() -> str:
    """``compiled``, or why the plain Python runs: ``pure (STREAMFS_PURE)``, ``pure (not
    built)``, ``pure (stale: streamfs.tiles changed since the build)``..."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"pure ({PURE_ENV})"
    return _build_status()


def _build_status() -> str:
    try:
        built = json.loads((COMPILED_DIR / MANIFEST).read_text())
    except (OSError, ValueError):
        return "pure (not built)"
    if built.get("python") != sys.implementation.cache_tag:
        return f"pure (built for {built.get('python')}, this is {sys.implementation.cache_tag})"
    now = source_hashes()
    changed = [m for m in MODULES if built.get("sources", {}).get(m) != now[m]]
    if changed:
        return f"pure (stale: {', '.join(changed)} changed since the build)"
    return "compiled"


def activate(package_path: MutableSequence[str]) -> bool:
    """Put the compiled modules first on ``package_path`` if they match their source."""
    if status() != "compiled":
        return False
    compiled = str(COMPILED_DIR)
    if compiled not in package_path:
        package_path.insert(0, compiled)
    return True


def is_compiled(module: object) -> bool:
    """Whether an imported module is its compiled build (not its ``.py``)."""
    return not str(getattr(module, "__file__", "")).endswith(".py")


def build(quiet: bool = True) -> Path:
    """Compile :data:`MODULES` into :data:`COMPILED_DIR`; raises :class:`NativeBuildError`."""
    import shutil
    import tempfile

    try:
        from mypyc.build import mypycify
        from setuptools import setup  # type: ignore[import-untyped]
    except ImportError as exc:
        raise NativeBuildError(f"mypyc and setuptools are needed to build: {exc}") from exc
    hashes = source_hashes()  # before compiling: a file edited meanwhile reads as stale
    with tempfile.TemporaryDirectory(prefix="streamfs-native-") as tmp:
        log = Path(tmp) / "build.log"
        cwd, stdout, stderr = os.getcwd(), os.dup(1), os.dup(2)
        try:
            # In an empty directory: setuptools must not read the project's pyproject.toml.
            os.chdir(tmp)
            if quiet:
                with log.open("wb") as sink:
                    os.dup2(sink.fileno(), 1)
                    os.dup2(sink.fileno(), 2)
            extensions = mypycify(
                ["--ignore-missing-imports", *(str(source_path(m)) for m in MODULES)],
                opt_level="3",
                group_name=GROUP,
            )
            setup(
                name="streamfs-native",
                ext_modules=extensions,
                script_args=["build_ext", "--build-lib", str(Path(tmp) / "lib")],
            )
        except (Exception, SystemExit) as exc:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise NativeBuildError(f"mypyc build failed: {exc}\n{tail}") from exc
        finally:
            os.dup2(stdout, 1)
            os.dup2(stderr, 2)
            os.close(stdout)
            os.close(stderr)
            os.chdir(cwd)
        built = sorted((Path(tmp) / "lib" / "streamfs").glob("*.so"))
        if len(built) != len(MODULES) + 1:
            names = [p.name for p in built]
            raise NativeBuildError(f"mypyc built {names}, expected one per module")
        staging = Path(tempfile.mkdtemp(prefix="_compiled.", dir=PACKAGE_DIR))
        for path in built:
            shutil.copy2(path, staging / path.name)
        manifest = {"python": sys.implementation.cache_tag, "sources": hashes}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        shutil.rmtree(COMPILED_DIR, ignore_errors=True)
        staging.rename(COMPILED_DIR)
    return COMPILED_DIR


def run(action: str) -> int:
    """``streamfs native build|status``."""
    if action == "status":
        print(status())
        return 0
    if _build_status() == "compiled":
        print("streamfs native: the compiled modules are up to date")
        return 0
    try:
        target = build()
    except NativeBuildError as exc:
        print(f"streamfs native: {exc}", file=sys.stderr)
        print("streamfs native: the plain Python modules stay in use", file=sys.stderr)
        return 1
    print(f"streamfs native: compiled {len(MODULES)} modules into {target}")
    return 0
