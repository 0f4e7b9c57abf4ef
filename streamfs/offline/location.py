"""Where offline files live: a root string (local path or pyarrow URI) or a filesystem object.

Every offline writer and reader goes through a :class:`Location`, so a root of
``s3://bucket/features`` (or ``gs://``, ``hdfs://``, ``file:///...``) is read
and written through :mod:`pyarrow.fs` exactly like a local directory. Code that
already holds a filesystem (tests, or an application that configured S3
credentials itself) passes a :class:`Location` built from it instead of a string.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyarrow import fs

from streamfs.offline.storage import resolve_root


@dataclass(frozen=True, slots=True)
class Location:
    """A filesystem and a path in it (no trailing slash)."""

    filesystem: fs.FileSystem
    path: str

    @classmethod
    def of(cls, root: str | Location) -> Location:
        """``root`` as a location: a plain path is a local directory, ``scheme://`` a
        pyarrow filesystem URI (:func:`streamfs.offline.storage.resolve_root`)."""
        if isinstance(root, Location):
            return root
        filesystem, path = resolve_root(root)
        return cls(filesystem, path)

    def __str__(self) -> str:
        return f"{self.filesystem.type_name}:{self.path}"
