"""Backfill inputs: files, directories or URIs of Parquet, CSV or JSON Lines, checked row by row.

``--from`` takes local paths, directories (every file with a known suffix below
it, in name order, hidden files skipped) and pyarrow filesystem URIs
(``s3://bucket/exports/2024/``, ``gs://...``, ``file:///...``). A remote file is
copied to a local temporary file through :mod:`pyarrow.fs` and read there by the
producer's reader (:func:`streamfs.producer.check_file`), so local and remote
files are checked by one code path and bad rows are reported by the name the
user gave and the row an editor shows.

The source's key and event-time fields are checked as required even where its
reader schema lets them be null: ingestion rejects such events (``missing_field``),
so a backfill does too, with their file and row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyarrow import fs

from streamfs.definitions import Source
from streamfs.errors import ConfigError
from streamfs.offline.location import Location
from streamfs.producer import FILE_FORMATS, CheckedFile, check_file


@dataclass(frozen=True, slots=True)
class InputFile:
    """One file to backfill: the name problems report, where it is, its size in bytes."""

    name: str
    location: Location
    size: int


def expand(specs: Sequence[str | Path], filesystem: fs.FileSystem | None = None) -> list[InputFile]:
    """The files ``specs`` name (paths, directories, URIs; or paths in ``filesystem``)."""
    out: list[InputFile] = []
    for spec in specs:
        name = str(spec)
        location = Location(filesystem, name) if filesystem is not None else Location.of(name)
        try:
            info = location.filesystem.get_file_info(location.path)
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read: {exc}") from exc
        if info.type == fs.FileType.File:
            out.append(InputFile(name, location, info.size or 0))
        elif info.type == fs.FileType.Directory:
            out += _directory(name, location)
        else:
            raise ConfigError(f"{name}: no such file or directory")
    return out


def _directory(name: str, location: Location) -> list[InputFile]:
    selector = fs.FileSelector(location.path, recursive=True)
    found = []
    for info in location.filesystem.get_file_info(selector):
        relative = info.path[len(location.path) :].lstrip("/")
        hidden = any(part.startswith((".", "_")) for part in relative.split("/"))
        suffix = Path(info.base_name).suffix.lower()
        if info.type == fs.FileType.File and not hidden and suffix in FILE_FORMATS:
            child = Location(location.filesystem, info.path)
            found.append(InputFile(f"{name.rstrip('/')}/{relative}", child, info.size or 0))
    if not found:
        raise ConfigError(f"{name}: no {', '.join(sorted(set(FILE_FORMATS)))} files in it")
    return sorted(found, key=lambda f: f.name)


@contextlib.contextmanager
def local_path(f: InputFile) -> Iterator[Path]:
    """``f`` as a local file: itself if it is one, else a temporary copy."""
    if isinstance(f.location.filesystem, fs.LocalFileSystem):
        yield Path(f.location.path)
        return
    with tempfile.TemporaryDirectory(prefix="streamfs-backfill-") as tmp:
        local = Path(tmp) / Path(f.location.path).name
        try:
            with (
                f.location.filesystem.open_input_stream(f.location.path) as src,
                local.open("wb") as dst,
            ):
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        except OSError as exc:
            raise ConfigError(f"{f.name}: cannot read: {exc}") from exc
        yield local


def required_key_and_time(source: Source) -> str:
    """The source's reader schema with its key and event-time fields made non-null."""
    schema: dict[str, Any] = json.loads(source.reader_schema)
    for field in schema["fields"]:
        if field["name"] in (source.key_field, source.event_time_field):
            kind = field["type"]
            if isinstance(kind, list):
                branches = [t for t in kind if t != "null"]
                field["type"] = branches[0] if len(branches) == 1 else branches
                if field.get("default", 0) is None:
                    del field["default"]
    return json.dumps(schema)


def check(f: InputFile, schema: str) -> CheckedFile:
    """Every row of ``f`` checked against ``schema`` (Avro JSON); problems name ``f.name``."""
    with local_path(f) as path:
        checked = check_file(path, schema)
    if str(path) == f.name:
        return checked
    problems = [dataclasses.replace(p, path=f.name) for p in checked.problems]
    return CheckedFile(checked.records, problems, checked.ignored_columns)
