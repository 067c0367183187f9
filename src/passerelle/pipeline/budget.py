"""Budgets and rate limits at admission: reserve the worst case, settle to the real cost.

Before any upstream call, the call's worst-case cost (estimated prompt tokens at the input price,
plus ``max_tokens`` — or the configured ceiling — at the output price, for the dearest target of
its route) is checked against every budget that applies and reserved in the same atomic step, and
the rate limits are counted. When the answer is complete the reservation becomes the real cost;
on failure it is released (the real cost of a failed call is what the ledger says, usually 0).
A hard budget refuses with 429 ``insufficient_quota``; a soft one lets the call through and marks
it in the ledger. If the counters cannot be reached, calls under a budget or limit fail closed (503).
"""

from __future__ import annotations

import logging
from decimal import Decimal

from passerelle.errors import RateLimitError, ServiceUnavailableError, StoreError
from passerelle.limits.counters import Admission, Counters, Refusal, Reservation
from passerelle.limits.periods import period_end
from passerelle.limits.rules import BudgetRule, Limits, RateRule, to_nano
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.pipeline.resolve import Pricer
from passerelle.pricing.cost import worst_case_usd
from passerelle.pricing.estimate import estimate_prompt_tokens

log = logging.getLogger("passerelle.budget")


def worst_case_nano(call: Call, pricer: Pricer, ceiling: int, prompt_tokens: int) -> int:
    worst = Decimal(0)
    for target in call.route.targets:
        price = pricer.price(target, call.received_at)
        if price is None:
            continue  # unpriced: recorded as such, cannot be reserved
        worst = max(
            worst,
            worst_case_usd(
                price,
                input_tokens=prompt_tokens,
                max_output_tokens=call.max_tokens or ceiling,
            ),
        )
    return to_nano(worst, up=True)


def refusal_error(refusal: Refusal, at: float) -> RateLimitError:
    rule = refusal.rule
    if isinstance(rule, BudgetRule):
        end = period_end(rule.period, at)
        resets = f"resets at {end.strftime('%Y-%m-%dT%H:%M:%SZ')}" if end else "never resets"
        err = RateLimitError(
            f"budget exceeded: {rule.label} has a {rule.kind_label} budget of ${rule.usd} per "
            f"{rule.period}; this request could cost more than what is left; {resets}",
            code="insufficient_quota",
            headers={"retry-after": str(refusal.retry_after_s)},
        )
        err.type = "insufficient_quota"
        return err
    assert isinstance(rule, RateRule)
    unit = "requests" if rule.kind == "rpm" else "tokens"
    return RateLimitError(
        f"rate limit reached for {rule.label}: {rule.limit} {unit} per minute; "
        f"retry in {refusal.retry_after_s}s",
        code="rate_limit_exceeded",
        headers={"retry-after": str(refusal.retry_after_s)},
    )


class Budget:
    def __init__(self, limits: Limits, counters: Counters, pricer: Pricer, ceiling: int) -> None:
        self._limits = limits
        self._counters = counters
        self._pricer = pricer
        self._ceiling = ceiling

    async def __call__(self, call: Call, next: Next) -> None:
        tenant = call.tenant
        assert tenant is not None and call.key is not None
        budgets = self._limits.budgets_for(tenant, call.key.key_id, call.feature)
        rates = self._limits.rates_for(tenant, call.key.key_id)
        if not budgets and not rates:
            await next(call)
            return
        prompt = estimate_prompt_tokens(call.body)
        admission = Admission(
            reservation_id=call.request_id,
            at=call.received_at,
            amount_nano=worst_case_nano(call, self._pricer, self._ceiling, prompt),
            budgets=budgets,
            rates=rates,
            tokens=prompt + (call.max_tokens or 0),
        )
        try:
            outcome = await self._counters.admit(admission)
        except StoreError as exc:
            log.error("budget counters unreachable: %s", exc)
            raise ServiceUnavailableError(
                "budget and rate-limit state is unreachable; the request is refused rather than "
                "passed unmetered",
                code="budget_store_unavailable",
            ) from exc
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
