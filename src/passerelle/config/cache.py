"""The answer cache's section of the configuration (``cache:``), kept apart from ``schema.py``.

``cache: {exact: {ttl_s: 3600}}`` turns the exact cache on; absent, nothing is cached.
``semantic: {models: [...]}`` adds the semantic cache for those models (or features), after the
exact one and under its rules. What each setting does is in ``docs/caching.md``.
"""

from __future__ import annotations

from pydantic import Field

from passerelle.config.base import Strict


class ExactCacheConfig(Strict):
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


# measured on the QQP pairs' tuning half, reported on the other half (bench/semantic_cache.py)
DEFAULT_THRESHOLD = 0.955


class SemanticCacheConfig(Strict):
    models: list[str] = Field(
        default_factory=list,
        description="Models (names from `models:`) whose calls the semantic cache serves and keeps.",
    )
    features: list[str] = Field(
        default_factory=list,
        description="Features (the call's `feature`) whose calls it serves and keeps, whatever "
        "their model. A call is in if its model or its feature is named.",
    )
    threshold: float = Field(
        default=DEFAULT_THRESHOLD,
        gt=0,
        le=1,
        description="The least cosine between two prompts' embeddings for one to be answered "
        "with the other's answer. The default keeps false hits under 1% on the QQP pairs "
        "(docs/caching.md); lower it for more hits and more wrong answers.",
    )
    lexical_check: bool = Field(
        default=True,
        description="Also require the same numbers, negation, names and no opposite words "
        "(to/from, before/after...) in both prompts.",
    )
    ttl_s: float = Field(default=3600, gt=0, description="How long an entry is served, in seconds.")
    max_entries: int = Field(
        default=10_000,
        ge=1,
        description="The most entries kept (each replica indexes all of them; the oldest go first).",
    )
    max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="The most bytes of answers kept, counted like the exact cache's.",
    )
    max_prompt_chars: int = Field(
        default=1000,
        ge=1,
        description="A last user message longer than this is not looked up semantically.",
    )
    max_messages: int = Field(
        default=8,
        ge=1,
        description="A conversation of more messages (the system prompt included) is not looked "
        "up semantically.",
    )


class CacheConfig(Strict):
    exact: ExactCacheConfig | None = Field(
        default=None,
        description="The exact cache: the same request (every field that changes the answer, "
        "for the same tenant and model) gets the stored answer at cost 0. Off when absent.",
    )
    semantic: SemanticCacheConfig | None = Field(
        default=None,
        description="The semantic cache: a prompt close enough in meaning to an earlier one of the "
        "same tenant, model, earlier turns and parameters gets its answer. Needs `exact` and the "
        "`semantic` extra. Off when absent.",
    )
