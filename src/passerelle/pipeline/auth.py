"""Authentication: the bearer key names the tenant; nothing else is read before it succeeds."""

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


class Auth:
    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    async def __call__(self, call: Call, next: Next) -> None:
        token = bearer(call.headers)
        if token is None:
            raise AuthenticationError("missing API key: send it as 'Authorization: Bearer sk-...'")
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
