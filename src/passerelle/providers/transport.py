"""The HTTP transport shared by HTTP providers: pooled, long-lived, errors translated once.

One ``aiohttp.ClientSession`` per provider, created at start-up and closed at shutdown. Every
low-level failure becomes the ``ProviderError`` of its kind here (a connection that could not be
opened, a timeout, a reset or any other transport failure),
chained to its cause, so providers only deal with HTTP statuses. An answer is read up to
``max_response_bytes`` and no further: an upstream (or a client's request for 100,000 embeddings)
cannot make the gateway hold more than that per call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
import orjson

from passerelle.errors import (
    ProviderEngineError,
    ProviderFailedError,
    ProviderTimeoutError,
    ProviderUnreachableError,
)


@contextmanager
def translated(provider: str) -> Iterator[None]:
    """The one place where low-level failures become ``ProviderError``."""
    try:
        yield
    except TimeoutError as exc:
        raise ProviderTimeoutError("timed out", provider=provider) from exc
    except aiohttp.ClientConnectorError as exc:  # no connection at all: the provider's health
        raise ProviderUnreachableError(
            f"connection failed: {type(exc).__name__}", provider=provider
        ) from exc
    except aiohttp.ClientError as exc:
        raise ProviderFailedError(
            f"connection failed: {type(exc).__name__}", provider=provider
        ) from exc


def json_object(raw: bytes, provider: str) -> dict[str, Any]:
    """An upstream's answer as a JSON object; anything else is a provider failure worth retrying."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProviderFailedError("answer is not JSON", provider=provider) from exc
    if not isinstance(doc, dict):
        raise ProviderFailedError("answer is not a JSON object", provider=provider)
    return doc


def stream_broke(provider: str, exc: Exception) -> ProviderFailedError | ProviderTimeoutError:
    """A stream that failed after it started: a timeout, or a failure worth retrying."""
    if isinstance(exc, TimeoutError):
        return ProviderTimeoutError("stream timed out", provider=provider)
    return ProviderFailedError(f"stream broke: {type(exc).__name__}", provider=provider)


def too_large(provider: str, cap: int) -> ProviderEngineError:
    return ProviderEngineError(
        f"answer larger than max_response_bytes ({cap} bytes); not read", provider=provider
    )


class HttpTransport:
    def __init__(
        self,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        max_connections: int,
        max_response_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout_s, sock_read=timeout_s
        )
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    @property
    def max_response_bytes(self) -> int:
        return self._max_response_bytes

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
                ),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def post(
        self, provider: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, bytes, str | None]:
        """Status, body, and the upstream's ``Retry-After`` if it sent one."""
        with translated(provider):
            async with self.session.post(
                url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                body = await self._read_capped(provider, resp)
                return resp.status, body, resp.headers.get("Retry-After")

    async def _read_capped(self, provider: str, resp: aiohttp.ClientResponse) -> bytes:
        cap = self._max_response_bytes
        declared = resp.content_length
        if declared is not None and "Content-Encoding" not in resp.headers:
            if declared > cap:
                raise too_large(provider, cap)
            return await resp.read()  # the usual case: one read of a known, allowed size
        out = bytearray()
        async for piece in resp.content.iter_chunked(1 << 16):
            out += piece
            if len(out) > cap:
                raise too_large(provider, cap)
        return bytes(out)

    @asynccontextmanager
    async def stream(
        self, provider: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        with translated(provider):
            resp = await self.session.post(
                url,
                data=body,
                headers=headers,
                timeout=self._stream_timeout,
                allow_redirects=False,
            )
        try:
            yield resp
        finally:
            resp.release()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
