"""The offline store: the append-only Parquet event log and point-in-time retrieval.

- :mod:`.layout`: where log files live and how they are named (pure);
- :mod:`.sql`, :mod:`.prefix`: DESIGN §3's window rule as DuckDB SQL, built from
  the same definitions the worker compiles (pure);
- :mod:`.schema`, :mod:`.storage`: the explicit Arrow schema of a source's log,
  and the root as a pyarrow filesystem;
- :mod:`.log`: the Parquet writer (:class:`~streamfs.offline.log.OfflineSink`);
- :mod:`.retrieval`: :func:`~streamfs.offline.retrieval.get_historical_features`;
- :mod:`.backfill`, :mod:`.consistency`, :mod:`.compact`: batch ingestion from
  files, the online/offline check, merging small files;
- :mod:`.command`: the CLI commands over them.

This package is the only place pyarrow and duckdb are imported; importing it
(not its modules) costs nothing.
"""
