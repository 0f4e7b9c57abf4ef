"""Point-in-time training sets: ``get_historical_features`` with DuckDB over the Parquet log.

For every row of ``entity_df`` (entity key column(s) and a timestamp ``t``) each
feature is its aggregation over the entity's events with
``floor((t - W) / h) * h <= event_time <= t`` (DESIGN §3), the value the online
engine serves at ``t`` for the same events. The SQL is :mod:`streamfs.offline.sql`.

How it runs, per view: the entity keys of ``entity_df`` get dense integer ids;
DuckDB reads the view's source log (only those entities, nothing after the latest
``t``), evaluates each feature's input and filter per event and sorts the events by
``(entity, event_time, offset)``; numpy then answers every window of every row at
once from index ranges of the sorted events (:mod:`streamfs.offline.vector`), in
input order, duplicates and all. Functions that no index range answers
(count_distinct, percentiles, min/max of strings) are window functions over the
events unioned with the distinct ``(entity, t)`` points (:mod:`streamfs.offline.sql`),
joined back by ``(entity, t)``; derived features are SQL over the row's features.

``entity_df`` may be a pyarrow Table or a pandas DataFrame; the result is the same
type: the input columns plus one column per requested feature, named as
requested (``view:feature`` or the bare name). The timestamp column holds
timestamps (any unit or zone) or integers of epoch milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import structlog
from numpy.typing import NDArray
from pyarrow import fs

from streamfs.definitions import FeatureView
from streamfs.definitions.compile import compile_view
from streamfs.offline.layout import source_dir
from streamfs.offline.schema import log_schema
from streamfs.offline.sql import OfflineQueryError, ViewQuery, quote, view_query
from streamfs.offline.storage import resolve_root
from streamfs.offline.vector import EventPlan, compute, sort_queries
from streamfs.online import ViewLayout, resolve_features

log = structlog.get_logger(__name__)

DEFAULT_TIMESTAMP_COLUMN = "event_timestamp"
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


_MS_PER_UNIT = {"s": 1000, "ms": 1, "us": 0.001, "ns": 0.000_001}


def _query_times(table: pa.Table, column: str) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Each row's timestamp in epoch ms (floored), and where it is not null.

    Timestamps count from the epoch in UTC whatever their zone (the zone is only how
    they print); dates are their midnight UTC.
    """
    if column not in table.column_names:
        raise OfflineQueryError(
            f"entity_df has no timestamp column {column!r}"
            f" (columns: {', '.join(table.column_names)})"
        )
    values = table.column(column)
    kind = values.type
    if pa.types.is_timestamp(kind):
        raw = _filled(values.cast(pa.int64()))
        factor = _MS_PER_UNIT[kind.unit]
        times = raw * int(factor) if factor >= 1 else raw // round(1 / factor)
    elif pa.types.is_date32(kind):
        times = _filled(values.cast(pa.int32()).cast(pa.int64())) * 86_400_000
    elif pa.types.is_date64(kind) or pa.types.is_integer(kind):
        times = _filled(values.cast(pa.int64()))
    else:
        raise OfflineQueryError(
            f"entity_df timestamp column {column!r} is {kind}; use timestamps or epoch-ms integers"
        )
    return times, np.asarray(pc.is_valid(values).to_numpy(zero_copy_only=False), np.bool_)


def _filled(values: pa.ChunkedArray) -> NDArray[np.int64]:
    return np.asarray(pc.fill_null(values, 0).to_numpy(), np.int64)


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
    computes every feature as a SQL window function (slower; for cross-checks).
    """
    table, was_pandas = _as_arrow(entity_df)
    wanted = resolve(views, features)
    by_name = {view.name: view for view in views}
    times, time_ok = _query_times(table, timestamp_column)
    result = table
    con = duckdb.connect()
    try:
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        if memory_limit is not None:
            con.execute(f"SET memory_limit = '{memory_limit}'")
        for i, (view_name, names) in enumerate(wanted.items()):
            view = by_name[view_name]
            query = view_query(view, names, prefix)
            columns = _view_columns(con, i, table, (times, time_ok), view, query, root, threads)
            for name, requested in _requested(features, view, names):
                result = result.append_column(requested, columns[name])
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


def _entity_ids(table: pa.Table, view: FeatureView) -> tuple[NDArray[np.int64], pa.Array]:
    """Each row's dense entity id (-1 for a null key) and the keys by id."""
    key = view.entity.join_keys[0]
    if key not in table.column_names:
        raise OfflineQueryError(
            f"entity_df has no column {key!r}, the join key of entity"
            f" {view.entity.name!r} (view {view.name!r})"
        )
    kind = pa.string() if view.entity.key_type == "string" else pa.int64()
    try:
        keys = table.column(key).cast(kind).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise OfflineQueryError(f"entity_df column {key!r} does not read as {kind}") from exc
    encoded = pc.dictionary_encode(keys)
    ids = np.asarray(pc.fill_null(encoded.indices, -1).to_numpy(), np.int64)
    return ids, encoded.dictionary


def _view_columns(
    con: duckdb.DuckDBPyConnection,
    i: int,
    table: pa.Table,
    when: tuple[NDArray[np.int64], NDArray[np.bool_]],
    view: FeatureView,
    query: ViewQuery,
    root: str,
    threads: int | None,
) -> dict[str, pa.Array]:
    """The view's features (and the derived features built on them), one value per row."""
    times, time_ok = when
    ids, keys = _entity_ids(table, view)
    valid = time_ok & (ids >= 0)
    _register_events(con, f"ev{i}", root, view)
    con.register(
        f"d{i}", pa.table({"_key": keys, "_k": pa.array(np.arange(len(keys), dtype=np.int32))})
    )
    latest = int(times[valid].max()) if valid.any() else None
    columns: dict[str, pa.Array] = {}
    if query.vector:
        plan = EventPlan.of(query.vector)
        read = "".join(f", {c}" for c in plan.sql_columns())
        where = "FALSE" if latest is None else f"_event_time_ms <= {latest}"
        # Offsets order ties in time only for first/last; a sort key fewer otherwise.
        ties = any(f.function in ("first", "last") for f in query.vector)
        order = "d._k, _event_time_ms" + (", coalesce(_offset, -1)" if ties else "")
        with ThreadPoolExecutor(1) as pool:  # sorting the queries overlaps DuckDB's work
            sorting = pool.submit(sort_queries, ids, times, valid)
            events = con.sql(
                f"SELECT d._k, _event_time_ms AS _ts{read} FROM ev{i} JOIN d{i} d"  # noqa: S608
                f" ON _entity_key = d._key WHERE {where} ORDER BY {order}"
            ).to_arrow_table()
            queries = sorting.result()
        columns |= compute(query.vector, plan, events, queries, len(keys), threads)
    if query.aggregates:
        columns |= _window_columns(con, i, ids, times, valid, query)
    if query.derived:
        con.register(f"f{i}", pa.table(columns))
        derived = ", ".join(f"{expr} AS {quote(name)}" for name, expr in query.derived)
        out = con.sql(f"SELECT {derived} FROM f{i}").to_arrow_table()  # noqa: S608
        columns |= {name: out.column(name).combine_chunks() for name, _ in query.derived}
    return columns


def _window_columns(
    con: duckdb.DuckDBPyConnection,
    i: int,
    ids: NDArray[np.int64],
    times: NDArray[np.int64],
    valid: NDArray[np.bool_],
    query: ViewQuery,
) -> dict[str, pa.Array]:
    """The window-function features: over the events and the distinct valid query points."""
    rows = pa.table(
        {
            "_row": pa.array(np.arange(len(ids))),
            "_k": pa.array(ids, mask=~valid),
            "_t": pa.array(times, mask=~valid),
        }
    )
    con.register(f"rows{i}", rows)
    read = "".join(f"{quote(c)}, " for c in sorted(query.columns))
    aggregates = ", ".join(f"{expr} AS {quote(name)}" for name, expr in query.aggregates)
    windows = ", ".join(f"{name} AS ({spec})" for name, spec in query.windows)
    points = f"SELECT DISTINCT _k, _t FROM rows{i} WHERE _k IS NOT NULL AND _t IS NOT NULL"  # noqa: S608
    events = (
        f"SELECT {read}d._k, _event_time_ms AS _ts, _offset AS _off FROM ev{i}"  # noqa: S608
        f" JOIN d{i} d ON _entity_key = d._key"
        f" WHERE _event_time_ms <= (SELECT max(_t) FROM rows{i})"
    )
    union = (
        f"SELECT _k, _t AS _ts, 1 AS _q FROM ({points})"  # noqa: S608
        f" UNION ALL BY NAME SELECT *, 0 AS _q FROM ({events})"
    )
    names = [name for name, _ in query.aggregates]
    picked = ", ".join(f"w.{quote(n)}" for n in names)
    out = con.sql(
        f"WITH w AS (SELECT _k, _ts AS _t, {aggregates} FROM ({union})"  # noqa: S608
        f" WINDOW {windows} QUALIFY _q = 1)"
        f" SELECT {picked} FROM rows{i} r LEFT JOIN w USING (_k, _t) ORDER BY r._row"
    ).to_arrow_table()
    columns = {}
    for name in names:
        column = out.column(name).combine_chunks()
        if name in query.zero_when_empty:  # rows without a valid key or time
            column = pc.fill_null(column, pa.scalar(0, column.type))
        columns[name] = column
    return columns
