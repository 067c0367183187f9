"""The answer cache's section of the configuration (``cache:``), kept apart from ``schema.py``.

``cache: {exact: {ttl_s: 3600}}`` turns the exact cache on; absent, nothing is cached. What each
setting does is in ``docs/caching.md``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExactCacheConfig(_Strict):
    ttl_s: float = Field(
        default=3600, gt=0, description="How long a stored answer is served, in seconds."
    )
    max_entries: int = Field(
        default=10_000,
        ge=1,
        description="The most answers kept (in this process, or in Redis with `redis:`, shared "
        "by the replicas); past it the least recently used (in Redis: the oldest) go first.",
    )
    max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="The most bytes of answers kept, counted like `max_entries`.",
    )
    max_entry_bytes: int = Field(
        default=1024 * 1024,
        ge=1,
        description="An answer larger than this (its body, or its stream's events) is not kept.",
    )
    allow_sampled: bool = Field(
        default=False,
        description="Also cache calls that sample (`temperature` above 0, or not set: the "
        "providers' default samples). Off: only calls with `temperature: 0` are cached, since "
        "the same request may rightly get another answer.",
    )
    models: list[str] | None = Field(
        default=None, description="Cache only these models (names from `models:`); all if absent."
    )
    except_models: list[str] = Field(
        default_factory=list, description="Never cache these models (names from `models:`)."
    )
    per_user: bool = Field(
        default=False,
        description="Put the end user (`user`, `safety_identifier`) in the key: one user's "
        "entries are never served to another user of the same tenant. Off: entries are shared "
        "within a tenant (never across tenants).",
    )


class CacheConfig(_Strict):
    exact: ExactCacheConfig | None = Field(
        default=None,
        description="The exact cache: the same request (every field that changes the answer, "
        "for the same tenant and model) gets the stored answer at cost 0. Off when absent.",
    )
