"""HTTP transports for the registry clients: aiohttp (async) and urllib (blocking).

They only move a :class:`~streamfs.schemas.client.Request` to the registry and its
answer back; paths, bodies, errors and caches are the client's business. Failing
to get an answer at all raises :class:`RegistryUnavailableError`.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from streamfs.errors import ConfigError
from streamfs.schemas.client import ACCEPT, CONTENT_TYPE, NO_ANSWER, Request, Response
from streamfs.schemas.errors import RegistryUnavailableError


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """The base URL without credentials, and the headers every request carries."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"schema registry URL must be http(s)://host[:port][/path], got {url!r}")
    headers = {"Accept": ACCEPT, "Content-Type": CONTENT_TYPE}
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if parts.username is not None:
        userinfo = f"{parts.username}:{parts.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(userinfo).decode("ascii")
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return base, headers


def _payload(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _body(request: Request) -> bytes | None:
    return None if request.body is None else json.dumps(request.body).encode()


class AiohttpTransport:
    """Async transport; the session is opened on first use, inside the running loop."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self._base, self._headers = split_url(url)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, request: Request) -> Response:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        url = self._base + request.path
        try:
            async with self._session.request(request.method, url, data=_body(request)) as answer:
                return Response(answer.status, _payload(await answer.text()))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryUnavailableError(
                f"{request.method} {url} failed: {exc!r}", error_code=NO_ANSWER, status=0
            ) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class UrllibTransport:
    """Blocking transport on the standard library: one connection per request."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self._base, self._headers = split_url(url)
        self._timeout_s = timeout_s

    def send(self, request: Request) -> Response:
        url = self._base + request.path
        http_request = urllib.request.Request(  # noqa: S310  # split_url allows only http(s)
            url, data=_body(request), headers=self._headers, method=request.method
        )
        try:
            with urllib.request.urlopen(http_request, timeout=self._timeout_s) as answer:  # noqa: S310  # as above
                return Response(answer.status, _payload(answer.read().decode()))
        except urllib.error.HTTPError as exc:
            return Response(exc.code, _payload(exc.read().decode(errors="replace")))
        except (OSError, TimeoutError) as exc:  # URLError is an OSError
            raise RegistryUnavailableError(
                f"{request.method} {url} failed: {exc!r}", error_code=NO_ANSWER, status=0
            ) from exc

    def close(self) -> None:
        """Nothing is kept open between requests."""
