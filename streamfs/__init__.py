"""streamfs: a real-time ML feature store.

Importing this package is cheap: it starts no event loop and imports neither faust
nor any client library; those load when the part that needs them is used. The
names below are the public API; the definitions and the FeatureStore load on first
use (``from streamfs import FeatureStore``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from streamfs import native as _native
from streamfs.errors import ConfigError, DefinitionError, ServiceError, StreamfsError
from streamfs.settings import Settings

# The compiled build of the per-event modules, when it matches their source (native.py).
_native.activate(__path__)

if TYPE_CHECKING:
    from streamfs.definitions import (
        Aggregation,
        Bucketize,
        DayOfWeek,
        Derived,
        Entity,
        FeatureView,
        HourOfDay,
        Log,
        MinMaxScale,
        OneHot,
        Source,
        StandardScale,
    )
    from streamfs.store import FeatureStore

__version__ = "0.1.0"

_LAZY = {
    "FeatureStore": "streamfs.store",
    **{
        name: "streamfs.definitions"
        for name in (
            "Aggregation",
            "Bucketize",
            "DayOfWeek",
            "Derived",
            "Entity",
            "FeatureView",
            "HourOfDay",
            "Log",
            "MinMaxScale",
            "OneHot",
            "Source",
            "StandardScale",
        )
    },
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamfs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Aggregation",
    "Bucketize",
    "ConfigError",
    "DayOfWeek",
    "DefinitionError",
    "Derived",
    "Entity",
    "FeatureStore",
    "FeatureView",
    "HourOfDay",
    "Log",
    "MinMaxScale",
    "OneHot",
    "ServiceError",
    "Settings",
    "Source",
    "StandardScale",
    "StreamfsError",
    "__version__",
]
