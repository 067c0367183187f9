"""Budgets and rate limits shared by every replica, in Redis, one atomic script per step.

Admission is one Lua script: it drops expired reservations (a crashed replica's holds go back to
the pool after ``RESERVATION_TTL_S``, and the counter is flagged for a correction from the ledger,
which holds their real cost), checks every budget and rate limit of the call, and only if all
pass, reserves. Settlement is another: the reservation out, the real cost in, counted only when
the reservation was still held, so a settlement retried after a lost reply counts once. A
settlement that cannot reach Redis is kept and retried in the background until it lands or its
hold expires. Budget counters are hashes ``{spent, reserved}`` per scope and period, corrected
from the ledger at start, when missing and when flagged (``limits/redis_recovery.py``). Every
script checks Redis' epoch first (``store/redis.py``): state lost means re-registering this
replica's holds, and refusing for a short recovery window. Redis unreachable means
``StoreError``: the budget stage turns that into a 503, never an unmetered pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from passerelle.errors import StoreError
from passerelle.limits.counters import Admission, Refusal, Reservation, Seed, dedupe, with_floor
from passerelle.limits.redis_recovery import Books, RecordedCost
from passerelle.limits.rules import BudgetRule, RateRule
from passerelle.store.redis import EPOCH_GUARD, SharedState, unreachable

log = logging.getLogger("passerelle.budget")

PREFIX = "passerelle:"
RESERVATION_TTL_S = 600
WINDOW_MS = 60_000
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0
MAX_UNSETTLED = 100_000

# KEYS: budget hash, budget reservations zset (pairs), then per rate rule its window (a zset of
# "reservation:amount" by time) and the window's running total (so no admission sums a window)
# ARGV: now_ms, reservation id, amount, reservation ttl ms, n_budgets, n_rates,
#       then per budget: limit, hard, expire_s; then per rate: limit, amount (1 or tokens);
#       then the margin floor: the index of its budget (0: none), its limit;
#       last the epoch (EPOCH_GUARD). Returns {1, soft...}, {0, rule, used[, retry ms]},
#       {2, budget}: counter missing, {3, budget}: counter flagged; both corrected, then again;
#       {4, budget, used}: the floor's counter is past the floor, nothing reserved
ADMIT = """
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local amount = tonumber(ARGV[3])
local rttl = tonumber(ARGV[4])
local nb = tonumber(ARGV[5])
local nr = tonumber(ARGV[6])
local fi = tonumber(ARGV[7 + 3*nb + 2*nr])
local flimit = tonumber(ARGV[8 + 3*nb + 2*nr])
local soft = {}
local refused = nil
for i = 1, nb do
  local h, z = KEYS[2*i-1], KEYS[2*i]
  -- holds past their expiry were never settled (a replica died, or Redis was out of its reach
  -- all along): their money goes back, and the ledger, which has their real cost, corrects spent
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, m in ipairs(expired) do
    local amt = tonumber(string.match(m, ':(%d+)$'))
    redis.call('HINCRBY', h, 'reserved', -amt)
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    redis.call('HSET', h, 'stale', 0)
    redis.call('HINCRBY', h, 'stale_n', 1)
  end
  -- a counter without 'spent' was never seeded, or Redis lost it (restarted empty, evicted):
  -- counting from 0 would hand out the budget again, so the caller seeds it from the ledger first
  if redis.call('HEXISTS', h, 'spent') == 0 then return {2, i} end
  local stale = redis.call('HGET', h, 'stale')
  if stale and tonumber(stale) <= now then return {3, i} end
end
for i = 1, nb do
  local h, z = KEYS[2*i-1], KEYS[2*i]
  local limit = tonumber(ARGV[6 + 3*i - 2])
  local hard = ARGV[6 + 3*i - 1] == '1'
  local used = tonumber(redis.call('HGET', h, 'spent') or '0')
             + tonumber(redis.call('HGET', h, 'reserved') or '0')
  -- past the margin floor, with what is in flight: the caller degrades or refuses the call
  if i == fi and used > flimit then return {4, i, used} end
  if used + amount > limit then
    if hard then refused = refused or {0, i, used} else table.insert(soft, i) end
  end
end
if refused then return refused end
local base = 6 + 3*nb
for j = 1, nr do
  local z, zs = KEYS[2*nb + 2*j - 1], KEYS[2*nb + 2*j]
  local limit = tonumber(ARGV[base + 2*j - 1])
  local amt = tonumber(ARGV[base + 2*j])
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now - 60000)
  if #expired > 0 then
    local gone = 0
    for _, m in ipairs(expired) do gone = gone + tonumber(string.match(m, ':(%d+)$')) end
    redis.call('DECRBY', zs, gone)
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now - 60000)
  end
  local total = tonumber(redis.call('GET', zs) or '0')
  if total + amt > limit then
    local oldest = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
    local retry = 1000
    if oldest[2] then retry = tonumber(oldest[2]) + 60000 - now end
    return {0, nb + j, total, retry}
  end
end
for i = 1, nb do
  local h, z = KEYS[2*i-1], KEYS[2*i]
  redis.call('HINCRBY', h, 'reserved', amount)
  redis.call('ZADD', z, now + rttl, rid .. ':' .. amount)
  local ex = tonumber(ARGV[6 + 3*i])
  redis.call('EXPIRE', h, ex)
  redis.call('EXPIRE', z, ex)
end
for j = 1, nr do
  local z, zs = KEYS[2*nb + 2*j - 1], KEYS[2*nb + 2*j]
  redis.call('ZADD', z, now, rid .. ':' .. ARGV[base + 2*j])
  redis.call('INCRBY', zs, ARGV[base + 2*j])
  redis.call('PEXPIRE', z, 61000)
  redis.call('PEXPIRE', zs, 61000)
end
local out = {1}
for _, i in ipairs(soft) do table.insert(out, i) end
return out
"""

# KEYS: budget hash + zset pairs, then tpm window + total pairs. ARGV: rid, reserved amount, actual, n_budgets,
# reserved tokens, actual tokens. Returns 1, or 0 when a counter is missing (being reseeded): the
# hold stays and the settlement is tried again once the counter is back
SETTLE = """
local rid, amount, actual = ARGV[1], ARGV[2], tonumber(ARGV[3])
local nb = tonumber(ARGV[4])
for i = 1, nb do
  if redis.call('HEXISTS', KEYS[2*i-1], 'spent') == 0 then return 0 end
end
for i = 1, nb do
  local h, z = KEYS[2*i-1], KEYS[2*i]
  if redis.call('ZREM', z, rid .. ':' .. amount) == 1 then
    redis.call('HINCRBY', h, 'reserved', -tonumber(amount))
    redis.call('HINCRBY', h, 'spent', actual)
  else
    -- no hold: settled already (a retry), or expired or lost: counted by a correction, never here
    redis.call('HSET', h, 'stale', 0)
    redis.call('HINCRBY', h, 'stale_n', 1)
  end
end
for j = 2*nb + 1, #KEYS, 2 do
  local score = redis.call('ZSCORE', KEYS[j], rid .. ':' .. ARGV[5])
  if score then
    redis.call('ZREM', KEYS[j], rid .. ':' .. ARGV[5])
    redis.call('ZADD', KEYS[j], score, rid .. ':' .. ARGV[6])
    redis.call('INCRBY', KEYS[j + 1], tonumber(ARGV[6]) - tonumber(ARGV[5]))
  end
end
return 1
"""


def _budget_keys(rule: BudgetRule, at: float) -> tuple[str, str]:
    base = PREFIX + "budget:" + rule.counter(at)
    return base, base + ":holds"


def _rate_keys(rule: RateRule) -> tuple[str, str]:
    window = PREFIX + "rate:" + rule.counter
    return window, window + ":total"


class RedisCounters:
    def __init__(
        self,
        state: SharedState | str,
        *,
        recorded_cost: RecordedCost | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state if isinstance(state, SharedState) else SharedState(state)
        redis = self._state.redis
        self._admit = redis.register_script(EPOCH_GUARD + ADMIT)
        self._settle = redis.register_script(SETTLE)
        self._books = Books(
            self._state,
            _budget_keys,
            reservation_ttl_s=RESERVATION_TTL_S,
            recorded_cost=recorded_cost,
            clock=clock,
        )
        self._clock = clock
        self._unsettled: dict[str, tuple[Reservation, int, int]] = {}
        self._retrier: asyncio.Task[None] | None = None

    async def start(self, rules: list[BudgetRule], seed: Seed) -> None:
        self._books.seed = seed
        self._state.start()
        try:
            left = await self._state.join()
            if left > 0:  # a new epoch: every other replica re-registers first
                await asyncio.sleep(left)
            at = self._clock()
            for rule in dedupe(rules, at):
                await self._books.correct(rule, at)
        except StoreError as exc:
            # start anyway: calls under a budget or limit are refused (503) until it is back
            log.error("redis is unreachable (%s): calls under budgets or limits get 503", exc)

    async def close(self) -> None:
        if self._retrier is not None:
            self._retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier
        if self._unsettled:
            await self._retry_once()
        if self._unsettled:
            log.error(
                "%d settlements never reached redis; their holds expire within %ds and the "
                "counters are then corrected from the ledger",
                len(self._unsettled),
                RESERVATION_TTL_S,
            )
        await self._state.close()

    async def admit(self, admission: Admission) -> Reservation | Refusal:
        at = admission.at
        budgets = with_floor(admission, at)
        keys: list[str] = []
        args: list[Any] = [
            int(at * 1000),
            admission.reservation_id,
            admission.amount_nano,
            RESERVATION_TTL_S * 1000,
            len(budgets),
            len(admission.rates),
        ]
        for rule in budgets:
            keys.extend(_budget_keys(rule, at))
            args.extend([rule.limit_nano, 1 if rule.hard else 0, rule.ttl(at)])
        for rate in admission.rates:
            keys.extend(_rate_keys(rate))
            args.extend([rate.limit, 1 if rate.kind == "rpm" else admission.tokens])
        floor = admission.floor
        if floor is not None:
            counter = floor.rule.counter(at)
            index = next(i for i, r in enumerate(budgets, 1) if r.counter(at) == counter)
            args.extend([index, floor.limit_nano])
        else:
            args.extend([0, 0])  # no floor (the epoch, last, must not be read as one)
        for _ in range(2 * len(budgets) + 2):
            out, epoch = await self._state.run(self._admit, keys, args)
            if int(out[0]) not in (2, 3):
                break
            lost = budgets[int(out[1]) - 1]
            if int(out[0]) == 2:
                log.warning(
                    "budget counter %s was missing in redis: reseeding it from the ledger",
                    lost.counter(at),
                )
            else:
                log.warning(
                    "budget counter %s has calls settled nowhere but in the ledger: reseeding it",
                    lost.counter(at),
                )
            await self._books.correct(lost, at, reseed=int(out[0]) == 3)
        else:
            raise StoreError("redis keeps losing the budget counters")
        admission.budgets = budgets
        if int(out[0]) == 1:
            reservation = Reservation(
                admission, soft_exceeded=[budgets[int(i) - 1] for i in out[1:]]
            )
            self._books.open[admission.reservation_id] = reservation
            if self._state.epoch != epoch:  # Redis lost it while the answer was on its way
                await self._books.hold(reservation, self._state.epoch)
            return reservation
        index, used = int(out[1]), int(out[2])
        if int(out[0]) == 4 and floor is not None:
            return Refusal(floor, used, 0)
        if index <= len(budgets):
            rule = budgets[index - 1]
            return Refusal(rule, used, rule.ttl(at) - 86400)
        retry_ms = int(out[3]) if len(out) > 3 else 1000
        return Refusal(
            admission.rates[index - len(budgets) - 1], used, max(1, retry_ms // 1000 + 1)
        )

    async def settle(self, reservation: Reservation, actual_nano: int, tokens: int) -> None:
        """Settle now, or keep it and retry in the background while Redis is out of reach."""
        if reservation.settled:
            return
        reservation.settled = True
        rid = reservation.admission.reservation_id
        self._books.open.pop(rid, None)  # recorded: from here the ledger holds this call
        try:
            if await self._apply(reservation, actual_nano, tokens):
                return
        except StoreError as exc:
            if len(self._unsettled) >= MAX_UNSETTLED:
                raise StoreError(f"too many settlements waiting for redis: {exc}") from exc
            log.warning("%s: settlement waits for redis (%s); retrying", rid, exc)
        self._unsettled[rid] = (reservation, actual_nano, tokens)
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.create_task(self._retry(), name="settlement-retry")

    async def _apply(self, reservation: Reservation, actual_nano: int, tokens: int) -> bool:
        """True once applied; False while one of its counters is missing (being reseeded)."""
        a = reservation.admission
        keys: list[str] = []
        for rule in a.budgets:
            keys.extend(_budget_keys(rule, a.at))
        for rate in a.rates:
            if rate.kind == "tpm":
                keys.extend(_rate_keys(rate))
        try:
            out = await self._settle(
                keys=keys,
                args=[
                    a.reservation_id,
                    a.amount_nano,
                    actual_nano,
                    len(a.budgets),
                    a.tokens,
                    tokens,
                ],
            )
        except (RedisError, OSError) as exc:
            raise unreachable(exc) from exc
        return int(out) == 1

    async def _retry(self) -> None:
        delay = RETRY_FIRST_S
        while self._unsettled:
            await asyncio.sleep(delay)
            delay = RETRY_FIRST_S if await self._retry_once() else min(delay * 2, RETRY_MAX_S)

    async def _retry_once(self) -> bool:
        """One pass over the waiting settlements; False when Redis is still out of reach."""
        for rid, (reservation, actual, tokens) in list(self._unsettled.items()):
            try:
                if not await self._apply(reservation, actual, tokens):
                    # a counter is missing: reseed it (no admission may come to do it)
                    a = reservation.admission
                    for rule in a.budgets:
                        await self._books.correct(rule, a.at)
                    if not await self._apply(reservation, actual, tokens):
                        continue
            except StoreError:
                if reservation.admission.at + RESERVATION_TTL_S < self._clock():
                    # its hold has expired: the next admission flags the counter, and the ledger
                    # corrects it
                    log.error("%s: settlement given up after its hold expired", rid)
                    del self._unsettled[rid]
                    continue
                return False
            del self._unsettled[rid]
            log.info("%s: settlement applied after redis came back", rid)
        return True

    async def spent_nano(self, rule: BudgetRule, at: float) -> int:
        key = _budget_keys(rule, at)[0]
        for _ in range(2):
            try:
                value = await self._state.redis.hget(key, "spent")
            except (RedisError, OSError) as exc:
                raise unreachable(exc) from exc
            if value is not None:
                return int(value)
            await self._books.correct(rule, at)  # lost (Redis restarted empty): seed it again
        return 0
