"""The configuration schema: one typed file, unknown keys rejected.

Every field is declared here with its default and a description; the configuration reference in
``docs/configuration.md`` is generated from these models (``passerelle config reference``), so the
docs cannot drift from the code. Secrets are only ever references (``env:NAME``, ``file:PATH``);
they are resolved by ``config.load`` and never appear in this module's values as literals.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, field_validator, model_validator

from passerelle.config.base import SecretRef, Strict
from passerelle.config.cache import CacheConfig, ExactCacheConfig
from passerelle.config.routing import CaptureConfig, RouteConfig, check_routes
from passerelle.config.sovereignty import AuditConfig, SovereigntyConfig
from passerelle.months import MONTH_PATTERN


class Price(Strict):
    """USD per million tokens."""

    input: Decimal = Field(ge=0, description="USD per million input (prompt) tokens.")
    output: Decimal = Field(ge=0, description="USD per million output (completion) tokens.")
    cached_input: Decimal | None = Field(
        default=None,
        ge=0,
        description="USD per million cached input tokens; the input price when absent.",
    )
    cache_write: Decimal | None = Field(
        default=None,
        ge=0,
        description="USD per million input tokens written to the prompt cache (Anthropic); "
        "the input price when absent.",
    )


class CapabilitiesConfig(Strict):
    """What a provider can do, where it differs from what its kind declares (unset: the kind's)."""

    streaming: bool | None = Field(default=None, description="Streamed answers.")
    tools: bool | None = Field(default=None, description="Tool (function) calling.")
    json_schema: bool | None = Field(
        default=None, description="`response_format` `json_schema` and `json_object`."
    )
    vision: bool | None = Field(default=None, description="Image parts in messages.")
    embeddings: bool | None = Field(default=None, description="`POST /v1/embeddings`.")
    completions: bool | None = Field(default=None, description="Legacy `POST /v1/completions`.")
    n: bool | None = Field(
        default=None,
        description="Several choices in one call; without it a request for `n` choices is "
        "made as `n` calls.",
    )
    logprobs: bool | None = Field(default=None, description="Token log probabilities.")

    def overrides(self) -> tuple[tuple[str, bool], ...]:
        return tuple((k, v) for k, v in self.model_dump().items() if v is not None)


class ProviderConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Unique provider name.")
    kind: Literal["openai", "anthropic", "local"] = Field(
        description="`openai`: any OpenAI-compatible HTTP API; `anthropic`: the Messages API; "
        "`local`: the embedded llama.cpp engine."
    )
    base_url: str | None = Field(
        default=None,
        description="Upstream API root (e.g. `https://api.openai.com/v1`). "
        "Required for `openai`; defaults to `https://api.anthropic.com` for `anthropic`.",
    )
    api_key: SecretRef | None = Field(default=None, description="Upstream API key, by reference.")
    jurisdiction: str | None = Field(
        default=None,
        description="Where the provider processes data (`US`, `EU`, `self-hosted`...).",
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Total timeout of one attempt.")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Connection timeout.")
    max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries on 429, 5xx and connection errors."
    )
    retry_backoff_s: float = Field(
        default=0.2, ge=0, description="First retry delay; doubles each retry, with jitter."
    )
    breaker_failures: int = Field(
        default=5, ge=1, description="Consecutive failures that open the circuit breaker."
    )
    breaker_cooldown_s: float = Field(
        default=30.0, ge=0, description="How long an open breaker keeps traffic away."
    )
    max_connections: int = Field(default=256, ge=1, description="Pooled connections to upstream.")
    max_response_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="The most bytes of one upstream answer (or one streamed event) the gateway "
        "reads; a larger one fails the attempt (502) instead of filling memory.",
    )
    capabilities: CapabilitiesConfig = Field(
        default_factory=CapabilitiesConfig,
        description="What the provider can do, where it differs from its kind's defaults: turn "
        "off what an OpenAI-compatible server lacks (`{n: false, logprobs: false}`) so requests "
        "that need it go to another target or get a 400 naming the feature. Kinds `anthropic` "
        "and `local` may only turn capabilities off.",
    )
    # local kind
    model: str | None = Field(
        default=None, description="`local`: a shipped model name (`gemma-3-270m`) or a GGUF path."
    )
    chat_format: Literal["transcript", "template"] = Field(
        default="transcript",
        description="`local`: `transcript` frames the chat as `Question:`/`Answer:` turns after "
        "two example exchanges (base models such as the shipped Gemma 3 270M); `template` uses "
        "the GGUF's own chat template (instruction-tuned models).",
    )
    n_ctx: int = Field(default=2048, ge=128, description="`local`: context window in tokens.")
    n_threads: int | None = Field(
        default=None,
        ge=1,
        description="`local`: CPU threads for generation; default half the usable CPUs, at "
        "least 1 (the rest keeps the gateway responsive).",
    )
    max_queue: int = Field(
        default=16,
        ge=0,
        description="`local`: requests that may wait for the engine; past that, 503.",
    )
    default_max_tokens: int = Field(
        default=256, ge=1, description="`local`: output limit when a request sets none."
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> ProviderConfig:
        if self.kind == "openai" and not self.base_url:
            raise ValueError(f"provider {self.name!r}: kind openai needs base_url")
        if self.kind == "local" and not self.model:
            raise ValueError(f"provider {self.name!r}: kind local needs model")
        if self.kind != "openai":
            added = [name for name, on in self.capabilities.overrides() if on]
            if added:
                raise ValueError(
                    f"provider {self.name!r}: kind {self.kind} can only turn capabilities off "
                    f"(not {', '.join(added)}): the gateway cannot give it what it lacks"
                )
        return self


class TargetConfig(Strict):
    provider: str = Field(description="Name of a provider declared under `providers`.")
    upstream_model: str | None = Field(
        default=None, description="Model name sent upstream; the public model name when absent."
    )
    price: Price | None = Field(
        default=None, description="Overrides the shipped price catalogue for this target."
    )


class ModelConfig(Strict):
    name: str = Field(description="The model name clients ask for.")
    targets: list[TargetConfig] = Field(
        min_length=1, description="Tried in order: retries, then fallback to the next."
    )
    degrade_to: str | None = Field(
        default=None, description="The next cheaper model of a degradation chain."
    )


class BudgetConfig(Strict):
    usd: Decimal = Field(gt=0, description="Amount in USD.")
    period: Literal["day", "month", "total"] = Field(description="Reset period (UTC).")
    feature: str | None = Field(default=None, description="Limit one feature of the tenant.")
    kind: Literal["hard", "soft"] = Field(
        default="hard", description="`hard` refuses past the limit; `soft` logs and reports."
    )


class RateLimitConfig(Strict):
    rpm: int | None = Field(default=None, ge=1, description="Requests per minute.")
    tpm: int | None = Field(default=None, ge=1, description="Tokens per minute.")


class KeyConfig(Strict):
    key: SecretRef = Field(description="The key, by reference.")
    name: str | None = Field(default=None, description="A label for reports.")
    budgets: list[BudgetConfig] = Field(default_factory=list, description="Limits of this key.")
    rate_limits: RateLimitConfig | None = Field(default=None, description="Limits of this key.")


class TenantConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$", description="Tenant name.")
    keys: list[SecretRef | KeyConfig] = Field(
        default_factory=list, description="API keys of this tenant, by reference."
    )
    plan: str | None = Field(default=None, description="Name of a plan under `plans`.")
    budgets: list[BudgetConfig] = Field(
        default_factory=list, description="Spending limits of the tenant or of one feature."
    )
    rate_limits: RateLimitConfig | None = Field(
        default=None, description="Requests and tokens per minute, for all its keys together."
    )
    data_class: str | None = Field(
        default=None,
        description="The least data class of its calls (a name under `sovereignty.classes`); "
        "the policy's `default_class` when absent. A client may raise it, never lower it.",
    )


class MarginFloorConfig(Strict):
    max_cost_share: Decimal = Field(
        gt=0, le=10, description="LLM cost as a share of the period's revenue that trips the floor."
    )
    action: Literal["refuse", "degrade"] = Field(description="What to do past the floor.")


class PlanConfig(Strict):
    name: str = Field(description="Plan name, referenced by tenants.")
    monthly_usd: Decimal = Field(ge=0, description="What a tenant on this plan pays per month.")
    margin_floor: MarginFloorConfig | None = Field(
        default=None, description="Degrade or refuse once LLM cost passes a share of revenue."
    )


class RevenueConfig(Strict):
    tenant: str = Field(description="Tenant name.")
    period: str = Field(pattern=MONTH_PATTERN, description="Month, `YYYY-MM` (1970-01 to 2999-12).")
    amount: Decimal = Field(ge=0, description="What the tenant paid that month.")
    currency: Literal["USD"] = Field(default="USD", description="Only USD for now.")


class ServerConfig(Strict):
    host: str = Field(default="127.0.0.1", description="Listen address.")
    port: int = Field(default=8080, ge=0, le=65535, description="Listen port.")
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest request body accepted."
    )
    default_max_tokens_ceiling: int = Field(
        default=4096,
        ge=1,
        description="The most output tokens (per choice) a call under a budget, rate limit or "
        "margin floor may produce: reserved as its worst case and sent upstream as its limit when "
        "the request sets no `max_tokens` / `max_completion_tokens`.",
    )
    max_tokens_above_ceiling: Literal["cap", "refuse"] = Field(
        default="cap",
        description="A call under a budget, rate limit or margin floor whose own `max_tokens` is "
        "above `default_max_tokens_ceiling`: `cap` sends the ceiling instead (the answer may stop "
        "with `finish_reason: length`; the ledger's decision says so), `refuse` answers 400 "
        "naming the field.",
    )
    idle_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A client connection with no request begun this long after it opened or "
        "after its last answer is closed.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A request's head (request line and headers) must arrive whole within this "
        "long of its first byte, or the connection is closed.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A request's body must arrive whole within this long of its head, or the "
        "connection is closed.",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Client connections held at once; past it a new one is answered 503 "
        "`too_many_connections` with `Retry-After` and closed. Keep it under the process's "
        "open-file limit less the upstream pools.",
    )
    idempotency_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Without `redis`: the bytes of stored answers the in-process idempotency "
        "store keeps; past it the oldest are forgotten first (a retry under a forgotten key runs "
        "again).",
    )
    responses_retention_s: float = Field(
        default=24 * 3600,
        ge=0,
        description="How long a response made through `/v1/responses` is kept so that a later "
        "one may continue it (`previous_response_id`) or read it (`GET /v1/responses/{id}`); "
        "per tenant, shared by the replicas with `redis`. 0 keeps none: `previous_response_id` "
        "is then refused (400).",
    )
    responses_max_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=0,
        description="The bytes of kept responses each tenant may hold in one process (without "
        "`redis`), the least recently used forgotten first; also the largest one response kept "
        "(with `redis` too).",
    )


class LedgerConfig(Strict):
    data_dir: str = Field(
        default="./passerelle-data",
        description="This process's own files: the journal of calls in flight (reconciled at the "
        "next start after a crash) and the dead-letter file. Local to the host, never shared "
        "state: with PostgreSQL each replica keeps its own.",
    )
    dead_letters: str | None = Field(
        default=None,
        description="JSON-lines file keeping ledger rows the store refused as invalid (default "
        "`<data_dir>/ledger-dead-letters.jsonl`).",
    )
    unreachable_after_s: float = Field(
        default=15.0,
        gt=0,
        description="How long a ledger write retries a lost connection (its callers wait) before "
        "those calls fail and the gateway refuses requests until the store is back.",
    )


class Config(Strict):
    admin_token: SecretRef | None = Field(
        default=None, description="Bearer token for `/admin/...`; admin API off when absent."
    )
    store: str = Field(
        default="sqlite:///./passerelle-data/ledger.db",
        description="Ledger: `sqlite:///path` or `postgresql://...`.",
    )
    redis: str | None = Field(
        default=None, description="`redis://...` for counters shared across replicas."
    )
    ledger: LedgerConfig = Field(
        default_factory=LedgerConfig, description="Durability of the ledger's writes."
    )
    server: ServerConfig = Field(default_factory=ServerConfig, description="Listening and limits.")
    providers: list[ProviderConfig] = Field(
        default_factory=list, description="Upstreams: APIs and self-hosted engines."
    )
    models: list[ModelConfig] = Field(
        default_factory=list, description="The model names clients ask for, and their targets."
    )
    tenants: list[TenantConfig] = Field(
        default_factory=list, description="Customers: their keys, budgets, limits and plan."
    )
    plans: list[PlanConfig] = Field(default_factory=list, description="What tenants pay.")
    revenue: list[RevenueConfig] = Field(
        default_factory=list, description="Recorded revenue per tenant and month."
    )
    audit: AuditConfig | None = Field(
        default=None,
        description="A keyed, chained record of every outbound attempt (where each call's data "
        "went, and why); off when absent.",
    )
    sovereignty: SovereigntyConfig | None = Field(
        default=None,
        description="Data classes and where each may go; no policy (every provider) when absent.",
    )
    cache: CacheConfig = Field(
        default_factory=CacheConfig, description="The answer cache (`docs/caching.md`)."
    )
    routes: list[RouteConfig] = Field(
        default_factory=list,
        description="Model names served by one of several models, chosen per request "
        "(`docs/routing.md`).",
    )
    prompt_capture: list[CaptureConfig] = Field(
        default_factory=list,
        description="Opt-in: the tenants (or features) whose prompts are kept, so that the "
        "feedback on their calls can train the router (`passerelle router train --from-ledger`).",
    )

    @field_validator("store")
    @classmethod
    def _store_url(cls, v: str) -> str:
        if not v.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("store must be sqlite:///PATH or postgresql://...")
        return v

    @model_validator(mode="after")
    def _references(self) -> Config:
        _unique("providers", [p.name for p in self.providers])
        _unique("models", [m.name for m in self.models])
        _unique("tenants", [t.name for t in self.tenants])
        _unique("plans", [p.name for p in self.plans])
        providers = {p.name for p in self.providers}
        models = {m.name for m in self.models}
        plans = {p.name for p in self.plans}
        for m in self.models:
            for t in m.targets:
                if t.provider not in providers:
                    raise ValueError(f"model {m.name!r}: unknown provider {t.provider!r}")
            if m.degrade_to is not None and m.degrade_to not in models:
                raise ValueError(f"model {m.name!r}: degrade_to names unknown model")
        exact = self.cache.exact
        for name in [*(exact.models or []), *exact.except_models] if exact else []:
            if name not in models:
                raise ValueError(f"cache.exact: unknown model {name!r}")
        semantic = self.cache.semantic
        if semantic is not None:
            _semantic_models(semantic.models, models, exact)
        for tenant in self.tenants:
            if tenant.plan is not None and tenant.plan not in plans:
                raise ValueError(f"tenant {tenant.name!r}: unknown plan {tenant.plan!r}")
            if tenant.data_class is not None and (
                self.sovereignty is None or tenant.data_class not in self.sovereignty.classes
            ):
                raise ValueError(
                    f"tenant {tenant.name!r}: unknown data class {tenant.data_class!r} "
                    "(declare it under sovereignty.classes)"
                )
        check_routes(self.routes, models, {t.name for t in self.tenants})
        return self


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{what}: {n!r} is declared twice")
        seen.add(n)


def _semantic_models(names: list[str], models: set[str], exact: ExactCacheConfig | None) -> None:
    if exact is None:
        raise ValueError("cache.semantic needs cache.exact: it comes after it, under its rules")
    for name in names:
        if name not in models:
            raise ValueError(f"cache.semantic: unknown model {name!r}")
        if (exact.models is not None and name not in exact.models) or name in exact.except_models:
            raise ValueError(f"cache.semantic: model {name!r} is not cached by cache.exact")
