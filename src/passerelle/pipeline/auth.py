"""Authentication: the key names the tenant; nothing else is read before it succeeds.

The key comes as ``Authorization: Bearer <key>`` (OpenAI's clients) or as ``x-api-key: <key>``
(Anthropic's clients send it so); a bearer token wins when both are sent."""

from __future__ import annotations

from passerelle.errors import AuthenticationError, ServiceUnavailableError, StoreError
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.tenancy import KeyRing


def bearer(headers: object) -> str | None:
    value = headers.get("Authorization") if hasattr(headers, "get") else None
    if not value:
        return None
    scheme, _, token = str(value).partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def api_key(headers: object) -> str | None:
    """The key a client sent: its bearer token, else its ``x-api-key``."""
    token = bearer(headers)
    if token is not None or not hasattr(headers, "get"):
        return token
    value = headers.get("x-api-key")
    return str(value).strip() or None if value else None


class Auth:
    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    async def __call__(self, call: Call, next: Next) -> None:
        token = api_key(call.headers)
        if token is None:
            raise AuthenticationError(
                "missing API key: send it as 'Authorization: Bearer sk-...' (or 'x-api-key')"
            )
        try:
            key = await self._keys.authenticate(token)
        except StoreError as exc:  # a key not seen yet is looked up in the ledger
            raise ServiceUnavailableError(
                "the ledger is unreachable, so this key cannot be checked; try again shortly",
                code="ledger_unavailable",
            ) from exc
        if key is None:
            raise AuthenticationError("invalid API key")
        call.key = key
        await next(call)
