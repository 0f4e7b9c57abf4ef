"""Load a topology directory: the entities, sources and feature views its Python files declare.

Each ``*.py`` file of the directory is imported as a module of one package (named
after the directory's absolute path, so two topologies never collide in
``sys.modules``), so files import each other relatively (``from .entities import
user``). Every :class:`Entity`, :class:`Source` and :class:`FeatureView` bound at
module level is collected, as Feast does for a repository; a view brings its
entity and source along. A definition that fails its checks raises
:class:`DefinitionError` while loading, before anything is applied.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import threading
import types
from pathlib import Path

from streamfs.errors import DefinitionError
from streamfs.registry.plan import Topology

_LOADING = threading.Lock()  # loading edits sys.modules: one load at a time


def load_topology(path: Path) -> Topology:
    """The definitions declared by the ``*.py`` files in ``path`` (a directory or one file)."""
    path = path.resolve()
    if not path.exists():
        raise DefinitionError(f"topology {str(path)!r} does not exist")
    directory = path if path.is_dir() else path.parent
    files = sorted(directory.glob("*.py")) if path.is_dir() else [path]
    files = [f for f in files if f.name != "__init__.py"]
    if not files:
        raise DefinitionError(f"topology {str(path)!r} has no .py files")
    with _LOADING:
        return _load(directory, files)


def _load(directory: Path, files: list[Path]) -> Topology:
    package = "_streamfs_topology_" + hashlib.sha1(str(directory).encode()).hexdigest()[:12]  # noqa: S324  # a name, not security
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]  # a fresh load each time: the files may have changed
    module = types.ModuleType(package)
    module.__path__ = [str(directory)]
    sys.modules[package] = module
    objects: list[object] = []
    for file in files:
        try:
            loaded = importlib.import_module(f"{package}.{file.stem}")
        except DefinitionError as exc:
            raise DefinitionError(f"{file.name}: {exc}") from exc
        objects.extend(vars(loaded).values())
    return Topology.of(objects)
