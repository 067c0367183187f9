"""Budgets, rate limits and margin floors at admission: reserve the worst case, hold the call to
it, settle to the real cost.

Before any upstream call, the call's worst-case cost is checked against every budget that applies
and reserved in the same atomic step, and the rate limits are counted. The worst case is the
estimated prompt at the dearest input rate plus every output token the call may produce at the
output rate, for the dearest target the call may use; what it may produce is ``n`` choices of
``max_tokens`` each. A call under a budget or rate limit never goes upstream without a limit: one
that sets no ``max_tokens`` is sent ``server.default_max_tokens_ceiling`` as its limit, and one
that asks for more than the ceiling is capped to it (the ledger's decision says so) or refused
with a 400, per ``server.max_tokens_above_ceiling``. So what admission reserves is what the
upstream is allowed to produce, and a hard budget holds to within nothing, not to within a
reply's length. Tokens per minute count the prompt estimate plus that output, corrected at
settlement.

A tenant under a margin floor has the floor checked in the same atomic admission (spent plus
reserved, calls in flight included); past it, the call is degraded or refused
(``pipeline/margin.py``) and, when degraded, admitted again at the cheaper model's worst case.

When the answer is complete the reservation becomes the real cost; on failure it is released (the
real cost of a failed call is what the ledger says, usually 0). A hard budget refuses with 429
``insufficient_quota``; a soft one lets the call through and marks it in the ledger. If the
counters cannot be reached, calls under a budget or limit fail closed (503).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from passerelle.errors import (
    InsufficientQuotaError,
    InvalidRequestError,
    RateLimitError,
    ServiceUnavailableError,
    StoreError,
)
from passerelle.limits.counters import Admission, Counters, Floor, Refusal, Reservation
from passerelle.limits.periods import period_end
from passerelle.limits.rules import BudgetRule, Limits, RateRule, to_nano
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.pipeline.margin import FloorCheck, MarginFloor
from passerelle.pipeline.resolve import Pricer
from passerelle.pricing.cost import worst_case_usd
from passerelle.pricing.estimate import estimate_prompt_tokens

log = logging.getLogger("passerelle.budget")


@dataclass(frozen=True, slots=True)
class OutputCeiling:
    """The most output tokens per choice a call under a budget or limit may produce, and what
    becomes of a request that asks for more (``refuse``: a 400; else capped)."""

    tokens: int
    refuse: bool = False


def output_limit(call: Call, ceiling: OutputCeiling) -> int:
    """The output tokens per choice the call is held to; sets ``call.max_tokens``, which dispatch
    sends upstream. Embeddings produce none."""
    if call.endpoint == "embeddings":
        return 0
    asked = call.max_tokens
    if asked is None:
        call.max_tokens = ceiling.tokens
        return ceiling.tokens
    if asked > ceiling.tokens:
        field = "max_completion_tokens" if "max_completion_tokens" in call.body else "max_tokens"
        if ceiling.refuse:
            raise InvalidRequestError(
                f"{field} is {asked}; a call under a budget or rate limit may ask for at most "
                f"{ceiling.tokens} output tokens",
                param=field,
                code="integer_above_max_value",
            )
        call.max_tokens = ceiling.tokens
        call.annotate(f"max_tokens capped: {asked} -> {ceiling.tokens}")
        call.response_headers["x-passerelle-max-tokens-capped"] = str(ceiling.tokens)
        return ceiling.tokens
    return asked


def choices(call: Call) -> int:
    """Answers the call may produce: ``n`` of them, for each prompt of a legacy completion's
    batch (a list of strings or of token arrays)."""
    n = call.body.get("n")
    each = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    prompt = call.body.get("prompt") if call.endpoint == "completions" else None
    batch = isinstance(prompt, list) and all(isinstance(p, str | list) for p in prompt)
    return each * len(prompt) if batch and isinstance(prompt, list) else each


def worst_case_nano(call: Call, pricer: Pricer, output_tokens: int, prompt_tokens: int) -> int:
    """The most the call may cost on any target it may use, given every output token it may
    produce (all choices together). A cascade may pay for one answer per step: its worst case
    is the sum of each step's dearest target."""
    routed = call.routed
    groups = [ts for _, ts in routed.steps] if routed and routed.steps else [call.targets]
    total = Decimal(0)
    for targets in groups:
        worst = Decimal(0)
        for target in targets:
            price = pricer.price(target, call.received_at)
            if price is None:
                continue  # unpriced: recorded as such, cannot be reserved
            worst = max(
                worst,
                worst_case_usd(price, input_tokens=prompt_tokens, max_output_tokens=output_tokens),
            )
        total += worst
    return to_nano(total, up=True)


def refusal_error(refusal: Refusal, at: float) -> RateLimitError:
    rule = refusal.rule
    if isinstance(rule, BudgetRule):
        end = period_end(rule.period, at)
        resets = f"resets at {end.strftime('%Y-%m-%dT%H:%M:%SZ')}" if end else "never resets"
        return InsufficientQuotaError(
            f"budget exceeded: {rule.label} has a {rule.kind_label} budget of ${rule.usd} per "
            f"{rule.period}; this request could cost more than what is left; {resets}",
            headers={"retry-after": str(refusal.retry_after_s)},
        )
    assert isinstance(rule, RateRule)
    unit = "requests" if rule.kind == "rpm" else "tokens"
    return RateLimitError(
        f"rate limit reached for {rule.label}: {rule.limit} {unit} per minute; "
        f"retry in {refusal.retry_after_s}s",
        code="rate_limit_exceeded",
        headers={"retry-after": str(refusal.retry_after_s)},
    )


class Budget:
    def __init__(
        self,
        limits: Limits,
        counters: Counters,
        pricer: Pricer,
        ceiling: OutputCeiling,
        floors: MarginFloor | None = None,
    ) -> None:
        self._limits = limits
        self._counters = counters
        self._pricer = pricer
        self._ceiling = ceiling
        self._floors = floors

    async def __call__(self, call: Call, next: Next) -> None:
        tenant = call.tenant
        assert tenant is not None and call.key is not None
        budgets = self._limits.budgets_for(tenant, call.key.key_id, call.feature)
        rates = self._limits.rates_for(tenant, call.key.key_id)
        check = self._floors.check_for(call) if self._floors else None
        if not budgets and not rates and check is None:
            await next(call)
            return
        output = output_limit(call, self._ceiling) * choices(call)
        prompt = estimate_prompt_tokens(call.body)
        outcome = await self._admit(call, budgets, rates, (prompt, output), check)
        if isinstance(outcome, Refusal) and isinstance(outcome.rule, Floor):
            assert self._floors is not None and check is not None
            self._floors.apply(call, check)  # refuses, or moves the call to a cheaper model
            outcome = await self._admit(call, budgets, rates, (prompt, output), None)
        if isinstance(outcome, Refusal):
            raise refusal_error(outcome, call.received_at)
        reservation = outcome
        call.defer(lambda c: self._settle(c, reservation))
        if reservation.soft_exceeded:
            labels = "; ".join(f"{r.label} {r.period} ${r.usd}" for r in reservation.soft_exceeded)
            call.annotate("soft-budget exceeded: " + labels)
            call.response_headers["x-passerelle-budget-warning"] = "soft budget exceeded"
            log.warning("%s: soft budget exceeded (%s)", call.request_id, labels)
        await next(call)

    async def _admit(
        self,
        call: Call,
        budgets: list[BudgetRule],
        rates: list[RateRule],
        tokens: tuple[int, int],
        check: FloorCheck | None,
    ) -> Reservation | Refusal:
        """One atomic admission; ``tokens`` is (estimated prompt, output the call may produce)."""
        prompt, output = tokens
        admission = Admission(
            reservation_id=call.request_id,
            at=call.received_at,
            amount_nano=worst_case_nano(call, self._pricer, output, prompt),
            budgets=list(budgets),
            rates=rates,
            tokens=prompt + output,
            floor=check.floor if check else None,
        )
        try:
            return await self._counters.admit(admission)
        except StoreError as exc:
            log.error("budget counters unreachable: %s", exc)
            raise ServiceUnavailableError(
                "budget and rate-limit state is unreachable; the request is refused rather than "
                "passed unmetered",
                code="budget_store_unavailable",
            ) from exc

    async def _settle(self, call: Call, reservation: Reservation) -> None:
        actual = to_nano(call.cost_usd, up=True) if call.cost_usd is not None else 0
        usage = call.usage
        tokens = usage.input_tokens + usage.output_tokens if usage else 0
        try:
            # the ledger already holds this call. Counters that cannot reach their store keep
            # the settlement and retry it; until it lands the worst case stays reserved, and a
            # hold that expires unsettled has the counter corrected from the ledger
            await self._counters.settle(reservation, actual, tokens)
        except StoreError as exc:
            log.error("%s: budget settlement failed: %s", call.request_id, exc)
