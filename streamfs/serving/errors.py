"""HTTP errors as JSON: every 4xx/5xx body is ``{"error": ..., "detail": ...}``.

:func:`error_status` maps streamfs errors to statuses in one table, so a handler
just raises; the middleware in :mod:`streamfs.serving.app` renders the body.
"""

from __future__ import annotations

from typing import Any

from streamfs.errors import ConfigError, StreamfsError
from streamfs.online import UnknownFeatureError
from streamfs.push import PushRejectedError, UnknownSourceError
from streamfs.registry.records import RegistryError
from streamfs.serving.catalog import NotFoundError


class ApiError(StreamfsError):
    """A request the API refuses: ``status``, a short ``error`` word, and a ``detail``."""

    def __init__(self, status: int, error: str, detail: Any) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


def error_status(exc: StreamfsError) -> tuple[int, str, Any]:
    """``(status, error, detail)`` for a streamfs error raised while answering."""
    if isinstance(exc, ApiError):
        return exc.status, exc.error, exc.detail
    if isinstance(exc, PushRejectedError):
        return 422, "invalid_events", [p.to_dict() for p in exc.problems]
    if isinstance(exc, UnknownFeatureError):
        return 404, "unknown_features", str(exc)
    if isinstance(exc, NotFoundError | UnknownSourceError):
        return 404, "not_found", str(exc)
    if isinstance(exc, ConfigError):
        return 503, "not_configured", str(exc)
    if isinstance(exc, RegistryError):
        return 503, "registry_unavailable", str(exc)
    return 503, "unavailable", str(exc)
