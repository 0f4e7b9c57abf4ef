"""Point-in-time training sets: ``get_historical_features`` with DuckDB over the Parquet log.

For every row of ``entity_df`` (entity key column(s) and a timestamp ``t``) each
feature is its aggregation over the entity's events with
``floor((t - W) / h) * h <= event_time <= t`` (DESIGN §3), the value the online
engine serves at ``t`` for the same events. The SQL is :mod:`streamfs.offline.sql`.

How it runs, per view: the distinct ``(entity, t)`` query points and the view's
source events (only those entities, nothing after the latest ``t``) are unioned
and every aggregate is a window function over that union (one sort per entity
partition, shared by all windows); the query points' rows are kept and joined
back to ``entity_df`` by ``(entity, t)``, so duplicates and input order survive.

``entity_df`` may be a pyarrow Table or a pandas DataFrame; the result is the same
type: the input columns plus one column per requested feature, named as
requested (``view:feature`` or the bare name). The timestamp column holds
timestamps (any unit or zone) or integers of epoch milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as pds
import structlog
from pyarrow import fs

from streamfs.definitions import FeatureView
from streamfs.definitions.compile import compile_view
from streamfs.offline.layout import source_dir
from streamfs.offline.prefix import prefix_statements
from streamfs.offline.schema import log_schema
from streamfs.offline.sql import OfflineQueryError, quote, view_query
from streamfs.offline.storage import resolve_root
from streamfs.online import ViewLayout, resolve_features

log = structlog.get_logger(__name__)

DEFAULT_TIMESTAMP_COLUMN = "event_timestamp"
_ROW = "__streamfs_row"
# SQL here is assembled from definitions (names quoted by ``quote``, literals by
# ``sql_literal``) and fixed text, never from data values: hence the S608 waivers.


def _as_arrow(entity_df: Any) -> tuple[pa.Table, bool]:
    if isinstance(entity_df, pa.Table):
        return entity_df, False
    if type(entity_df).__module__.startswith("pandas"):
        return pa.Table.from_pandas(entity_df, preserve_index=False), True
    raise OfflineQueryError(
        f"entity_df is a {type(entity_df).__name__}; pass a pyarrow Table or a pandas DataFrame"
    )


def _time_sql(table: pa.Table, column: str) -> str:
    if column not in table.column_names:
        raise OfflineQueryError(
            f"entity_df has no timestamp column {column!r}"
            f" (columns: {', '.join(table.column_names)})"
        )
    kind = table.schema.field(column).type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return f"epoch_ms(CAST(e.{quote(column)} AS TIMESTAMP))"
    if pa.types.is_integer(kind):
        return f"CAST(e.{quote(column)} AS BIGINT)"
    raise OfflineQueryError(
        f"entity_df timestamp column {column!r} is {kind}; use timestamps or epoch-ms integers"
    )


_DUCKDB_TYPES = {
    "int32": "INTEGER",
    "int64": "BIGINT",
    "float": "FLOAT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "string": "VARCHAR",
    "binary": "BLOB",
}


def _register_events(
    con: duckdb.DuckDBPyConnection, name: str, root: str, view: FeatureView
) -> None:
    """Make ``name`` the view's source log, with every column of its explicit schema.

    A local log is read by DuckDB's own Parquet reader (several times faster than
    scanning a pyarrow dataset from Python); any other filesystem through pyarrow.
    Columns no file has yet (a field added to the schema since) read as nulls.
    """
    filesystem, path = resolve_root(root)
    schema = log_schema(view.source)
    directory = source_dir(path, view.source.name)
    info = filesystem.get_file_info(directory)
    if info.type.name != "Directory":
        con.register(name, pds.dataset(schema.empty_table()))
        return
    if not isinstance(filesystem, fs.LocalFileSystem):
        con.register(
            name,
            pds.dataset(
                directory,
                schema=schema,
                format="parquet",
                filesystem=filesystem,
                exclude_invalid_files=False,
                ignore_prefixes=[".", "_"],
            ),
        )
        return
    files = "'" + f"{directory}/*/*.parquet".replace("'", "''") + "'"
    scan = f"read_parquet({files}, union_by_name = true, hive_partitioning = false)"
    try:
        present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}  # noqa: S608
    except duckdb.IOException:  # a directory without files yet
        con.register(name, pds.dataset(schema.empty_table()))
        return
    columns = [
        quote(f.name)
        if f.name in present
        else f"NULL::{_DUCKDB_TYPES[str(f.type)]} AS {quote(f.name)}"
        for f in schema
    ]
    con.execute(f"CREATE TEMP VIEW {name} AS SELECT {', '.join(columns)} FROM {scan}")  # noqa: S608


def log_entities(root: str, view: FeatureView) -> list[Any]:
    """The distinct entity keys in the offline log of the view's source, sorted."""
    con = duckdb.connect()
    try:
        _register_events(con, "ev", root, view)
        rows = con.execute("SELECT DISTINCT _entity_key FROM ev ORDER BY 1").fetchall()
    finally:
        con.close()
    return [row[0] for row in rows]


def resolve(views: Sequence[FeatureView], features: Sequence[str]) -> dict[str, list[str]]:
    """Requested names by view name, exactly as online reads resolve them."""
    layouts = {}
    for view in views:
        compiled = compile_view(view)
        derived = tuple(d.name for d in compiled.derived)
        layouts[view.name] = ViewLayout(view.name, 0, compiled.layout, derived, compiled.finish)
    return resolve_features(layouts, features)


def get_historical_features(
    entity_df: Any,
    features: Sequence[str],
    views: Sequence[FeatureView],
    root: str,
    *,
    timestamp_column: str = DEFAULT_TIMESTAMP_COLUMN,
    threads: int | None = None,
    memory_limit: str | None = None,
    prefix: bool = True,
) -> Any:
    """``entity_df`` with each of ``features`` valued at its row's timestamp (module doc).

    ``views`` are the served feature views (the registry's, via
    :meth:`streamfs.store.FeatureStore.get_historical_features`); ``root`` the
    offline log root. Unknown feature names raise
    :class:`~streamfs.online.UnknownFeatureError` naming them. ``prefix=False``
    computes every feature as a window function (slower; for cross-checks).
    """
    table, was_pandas = _as_arrow(entity_df)
    wanted = resolve(views, features)
    by_name = {view.name: view for view in views}
    time_sql = _time_sql(table, timestamp_column)
    table = table.append_column(_ROW, pa.array(range(table.num_rows), pa.int64()))
    con = duckdb.connect()
    try:
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        if memory_limit is not None:
            con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute("SET preserve_insertion_order = false")
        con.register("entity_df", table)
        joins: list[str] = []
        columns: list[str] = []
        for i, (view_name, names) in enumerate(wanted.items()):
            view = by_name[view_name]
            key = view.entity.join_keys[0]
            if key not in table.column_names:
                raise OfflineQueryError(
                    f"entity_df has no column {key!r}, the join key of entity"
                    f" {view.entity.name!r} (view {view.name!r})"
                )
            key_type = "VARCHAR" if view.entity.key_type == "string" else "BIGINT"
            key_sql = f"CAST(e.{quote(key)} AS {key_type})"
            _register_events(con, f"ev{i}", root, view)
            con.execute(
                f"CREATE TEMP TABLE q{i} AS SELECT DISTINCT {key_sql} AS _k, {time_sql} AS _t"  # noqa: S608
                " FROM entity_df e"
            )
            for statement in _view_statements(view, names, i, prefix):
                con.execute(statement)
            joins.append(
                f"LEFT JOIN r{i} ON r{i}._k IS NOT DISTINCT FROM {key_sql}"
                f" AND r{i}._t IS NOT DISTINCT FROM {time_sql}"
            )
            columns += [
                f"r{i}.{quote(n)} AS {quote(f)}" for n, f in _requested(features, view, names)
            ]
        select = ", ".join([f"e.* EXCLUDE ({quote(_ROW)})", *columns])
        sql = f"SELECT {select} FROM entity_df e {' '.join(joins)} ORDER BY e.{quote(_ROW)}"  # noqa: S608
        con.execute("SET preserve_insertion_order = true")
        result = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    log.info("historical_features", rows=result.num_rows, features=len(features))
    return result.to_pandas() if was_pandas else result


def _requested(
    features: Sequence[str], view: FeatureView, names: Sequence[str]
) -> list[tuple[str, str]]:
    """``(feature name in the view, requested name)`` for the features read from ``view``."""
    out = []
    for requested in features:
        view_name, sep, name = requested.rpartition(":")
        if (sep and view_name == view.name) or (not sep and name in names):
            out.append((name, requested))
    return out


def _view_statements(view: FeatureView, names: Sequence[str], i: int, prefix: bool) -> list[str]:
    """Statements leaving ``r{i}(_k, _t, names...)`` for every distinct query point ``q{i}``."""
    query = view_query(view, names, prefix)
    read = "".join(f"{quote(c)}, " for c in sorted(query.columns))
    # Entities get dense integer ids: sorting, grouping and joining ints beats strings.
    statements = [
        f"CREATE TEMP TABLE k{i} AS SELECT _k AS _key, CAST(row_number() OVER () AS INTEGER)"  # noqa: S608
        f" AS _k FROM (SELECT DISTINCT _k FROM q{i})",
        f"CREATE TEMP TABLE n{i} AS SELECT k._k, q._t FROM q{i} q JOIN k{i} k"  # noqa: S608
        " ON q._k IS NOT DISTINCT FROM k._key",
        f"CREATE TEMP TABLE e{i} AS SELECT {read}k._k, _event_time_ms AS _ts,"  # noqa: S608
        f" _offset AS _off FROM ev{i} JOIN k{i} k ON _entity_key = k._key"
        f" WHERE _event_time_ms <= (SELECT max(_t) FROM q{i})",
    ]
    parts = []
    if query.prefix:
        statements += prefix_statements(query.prefix, f"e{i}", f"n{i}", f"p{i}")
        parts.append(f"p{i}")
    if query.aggregates:
        aggregates = ", ".join(f"{expr} AS {quote(name)}" for name, expr in query.aggregates)
        windows = ", ".join(f"{name} AS ({spec})" for name, spec in query.windows)
        union = (
            f"SELECT _k, _t AS _ts, 1 AS _q FROM n{i} UNION ALL BY NAME SELECT *, 0 AS _q FROM e{i}"  # noqa: S608
        )
        statements.append(
            f"CREATE TEMP TABLE w{i} AS SELECT _k, _ts AS _t, {aggregates} FROM ({union})"  # noqa: S608
            f" WINDOW {windows} QUALIFY _q = 1"
        )
        parts.append(f"w{i}")
    joins = " ".join(f"LEFT JOIN {part} USING (_k, _t)" for part in parts)
    derived = "".join(f", {expr} AS {quote(name)}" for name, expr in query.derived)
    outputs = ", ".join(quote(n) for n in names)
    statements.append(
        f"CREATE TEMP TABLE r{i} AS SELECT k._key AS _k, x._t, {outputs} FROM"  # noqa: S608
        f" (SELECT *{derived} FROM n{i} {joins}) x JOIN k{i} k ON x._k = k._k"
    )
    return statements
