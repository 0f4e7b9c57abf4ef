"""Registry errors, each carrying the HTTP status and Confluent ``error_code`` it answers with.

A caller that acts on the kind of failure (the HTTP layer, a client retrying on
"not found") matches the class; the codes are Confluent's, so existing clients
(confluent-kafka, Java's ``RestService``) recognise them.
"""

from __future__ import annotations

from typing import ClassVar

from streamfs.errors import StreamfsError


class RegistryError(StreamfsError):
    """Root of the schema registry's errors."""

    http_status: ClassVar[int] = 500
    error_code: ClassVar[int] = 50001


class NotFoundError(RegistryError):
    """Something asked for is absent; an instance behind the log may catch up and retry."""

    http_status = 404


class SubjectNotFound(NotFoundError):
    error_code = 40401


class VersionNotFound(NotFoundError):
    error_code = 40402


class SchemaNotFound(NotFoundError):
    error_code = 40403


class SubjectSoftDeleted(NotFoundError):
    error_code = 40404


class SubjectNotSoftDeleted(NotFoundError):
    error_code = 40405


class VersionSoftDeleted(NotFoundError):
    error_code = 40406


class VersionNotSoftDeleted(NotFoundError):
    error_code = 40407


class SubjectConfigNotFound(NotFoundError):
    error_code = 40408


class UnprocessableError(RegistryError):
    http_status = 422


class InvalidSchema(UnprocessableError):
    error_code = 42201


class InvalidVersion(UnprocessableError):
    error_code = 42202


class InvalidCompatibilityLevel(UnprocessableError):
    error_code = 42203


class IncompatibleSchema(RegistryError):
    http_status = 409
    error_code = 409


class BadRequest(RegistryError):
    """The request body is not JSON, or not the shape the endpoint takes."""

    http_status = 400
    error_code = 400


class UnsupportedMediaType(RegistryError):
    http_status = 415
    error_code = 415


class StoreError(RegistryError):
    """The backing store (the Kafka topic) failed or could not be kept consistent."""

    http_status = 500
    error_code = 50001
