"""The error hierarchy: one root, a subclass wherever a caller acts differently."""

from __future__ import annotations


class StreamfsError(Exception):
    """Root of every error streamfs raises on purpose."""


class ConfigError(StreamfsError):
    """A setting is missing or malformed; the message names the setting."""


class ServiceError(StreamfsError):
    """A local service (Kafka, Redis, schema registry) could not be set up, started or reached.

    The message says what to do about it.
    """


class DefinitionError(StreamfsError):
    """A user definition (a Source, ...) is inconsistent; the message names it and the field."""
