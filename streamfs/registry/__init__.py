"""The registry: versioned definitions (entities, sources, feature views) with lineage.

Pure planning and reading (:mod:`.plan`, :mod:`.state`, :mod:`.semantics`) over
records (:mod:`.records`) kept by a backend: a compacted Kafka topic
(:mod:`.kafka`) or memory (:mod:`.backend`). :mod:`.topology` loads a directory
of definitions; :mod:`.command` is the CLI. Python callers use
:class:`streamfs.store.FeatureStore`.
"""
