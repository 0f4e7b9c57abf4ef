"""Tables in and out of files for the offline commands: Parquet, CSV or JSON Lines by suffix."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from streamfs.errors import ConfigError

_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl"}


def _format(path: Path) -> str:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(_FORMATS)}"
        )
    return fmt


def read_table(path: Path) -> pa.Table:
    """The rows of ``path``; a missing or unreadable file is a :class:`ConfigError` naming it."""
    fmt = _format(path)
    try:
        if fmt == "parquet":
            return pq.read_table(path)
        if fmt == "csv":
            return pcsv.read_csv(path)
        return pjson.read_json(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc


def write_table(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` in the format its suffix names (temp file, then rename)."""
    fmt = _format(path)
    temp = path.with_name(f".tmp-{path.name}")
    if fmt == "parquet":
        pq.write_table(table, temp)
    elif fmt == "csv":
        pcsv.write_csv(table, temp)
    else:
        import json

        with temp.open("w", encoding="utf-8") as out:
            for row in table.to_pylist():
                out.write(json.dumps(row, default=str) + "\n")
    temp.replace(path)
