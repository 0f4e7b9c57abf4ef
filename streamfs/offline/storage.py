"""The log root as a pyarrow filesystem: a local path or any URI pyarrow knows (s3://...)."""

from __future__ import annotations

import os

from pyarrow import fs

from streamfs.errors import ConfigError


def resolve_root(root: str) -> tuple[fs.FileSystem, str]:
    """``(filesystem, path)`` for ``root``; a plain path is a local directory."""
    if "://" not in root:
        return fs.LocalFileSystem(), os.path.abspath(root)
    try:
        filesystem, path = fs.FileSystem.from_uri(root)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"offline root {root!r}: {exc}") from exc
    return filesystem, path.rstrip("/")
