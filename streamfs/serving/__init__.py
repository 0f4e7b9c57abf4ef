"""Serving: the aiohttp JSON API, push ingestion and the web view (``streamfs serve``).

The only package that imports aiohttp. :mod:`.app` builds the application over a
:class:`~streamfs.serving.app.Server`; :mod:`.api` and :mod:`.web` hold the
handlers; :mod:`.openapi` documents them; :mod:`.command` is the CLI entry.
"""

VALUE_CACHE_ENTRIES = 50_000
"""Default size of the server's value cache (``streamfs serve --value-cache``), ~2 KB each."""
