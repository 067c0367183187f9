"""Tenants and their API keys, held in memory so authentication never waits on a database.

Keys are stored and looked up as SHA-256 digests (keys are random 256-bit strings, so a fast hash
is the right one); the digest found is compared again in constant time. Keys declared in the
configuration are loaded at start-up; keys created with ``passerelle keys create`` live in the
store and are fetched on first use, then cached. Unknown keys are remembered briefly so a flood
of bad keys cannot turn into a flood of store queries.

A tenant exists on purpose: it is declared in the configuration, or created explicitly with its
first key (``--create-tenant``, ``"create_tenant": true``). A new tenant's name follows the rule the
configuration applies, bounded to ``MAX_TENANT_NAME`` characters: letters, digits and ``_ . @ -``,
starting with a letter or digit (so never a ``:``, a space or a control character).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

KEY_PREFIX = "sk-"
NEGATIVE_TTL_S = 2.0
MAX_TENANT_NAME = 64
TENANT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")


def tenant_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a tenant's name, or None when it can."""
    if not 1 <= len(name) <= MAX_TENANT_NAME:
        return f"a tenant name is 1 to {MAX_TENANT_NAME} characters"
    if not TENANT_NAME_RE.fullmatch(name) or not name.isascii():
        return "a tenant name is letters, digits and _ . @ -, starting with a letter or a digit"
    return None


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str  # safe to log and report; never the key itself
    tenant: str
    digest: str
    name: str | None = None


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id_for(digest: str) -> str:
    return "key_" + digest[:12]


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


KeyLookup = Callable[[str], Awaitable[ApiKey | None]]


class KeyRing:
    def __init__(
        self, lookup: KeyLookup | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self._by_digest: dict[str, ApiKey] = {}
        self._unknown: dict[str, float] = {}
        self._lookup = lookup
        self._clock = clock

    def add(self, key: ApiKey) -> None:
        self._by_digest[key.digest] = key
        self._unknown.pop(key.digest, None)

    def add_secret(self, secret: str, tenant: str, name: str | None = None) -> ApiKey:
        digest = key_digest(secret)
        key = ApiKey(key_id=key_id_for(digest), tenant=tenant, digest=digest, name=name)
        self.add(key)
        return key

    async def authenticate(self, presented: str) -> ApiKey | None:
        digest = key_digest(presented)
        key = self._by_digest.get(digest)
        if key is None:
            key = await self._fetch(digest)
        if key is None or not hmac.compare_digest(key.digest, digest):
            return None
        return key

    async def _fetch(self, digest: str) -> ApiKey | None:
        if self._lookup is None:
            return None
        now = self._clock()
        seen = self._unknown.get(digest)
        if seen is not None and now - seen < NEGATIVE_TTL_S:
            return None
        key = await self._lookup(digest)
        if key is None:
            if len(self._unknown) > 10_000:
                self._unknown.clear()
            self._unknown[digest] = now
            return None
        self.add(key)
        return key
