"""Budgets and rate limits shared by every replica, in Redis, one atomic script per step.

Admission is one Lua script: it drops expired reservations (a crashed replica's holds go back to
the pool after ``RESERVATION_TTL_S``), checks every budget and rate limit of the call, and only if
all pass, reserves. Settlement is another: the reservation out, the real cost in. Budget counters
are hashes ``{spent, reserved}`` per scope and period, seeded from the ledger at start (``HSETNX``:
the first replica's figure stands). Redis unreachable means ``StoreError``: the budget stage turns
that into a 503, never an unmetered pass.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import RedisError

from passerelle.errors import StoreError
from passerelle.limits.counters import Admission, Refusal, Reservation, Seed, with_floor
from passerelle.limits.rules import BudgetRule, RateRule
from passerelle.store.redis import connect

log = logging.getLogger("passerelle.budget")

PREFIX = "passerelle:"
RESERVATION_TTL_S = 600
WINDOW_MS = 60_000

# KEYS: budget hash, budget reservations zset (pairs), then per rate rule its window (a zset of
# "reservation:amount" by time) and the window's running total (so no admission sums a window)
# ARGV: now_ms, reservation id, amount, reservation ttl ms, n_budgets, n_rates,
#       then per budget: limit, hard, expire_s; then per rate: limit, amount (1 or tokens);
#       then the margin floor: the index of its budget (0: none), its limit
# Returns {1, soft budget indexes...}, {0, index, used[, retry_ms]} (refused), {2, index}
# (counter lost), or {3, index, used}: the floor's counter is past the floor, nothing reserved
ADMIT = """
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local amount = tonumber(ARGV[3])
local rttl = tonumber(ARGV[4])
local nb = tonumber(ARGV[5])
local nr = tonumber(ARGV[6])
local fi = tonumber(ARGV[7 + 3*nb + 2*nr] or '0')
local flimit = tonumber(ARGV[8 + 3*nb + 2*nr] or '0')
local soft = {}
local refused = nil
for i = 1, nb do
  -- a counter without 'spent' was never seeded, or Redis lost it (restarted empty, evicted):
  -- counting from 0 would hand out the budget again, so the caller seeds it from the ledger first
  if redis.call('HEXISTS', KEYS[2*i-1], 'spent') == 0 then return {2, i} end
end
for i = 1, nb do
  local h, z = KEYS[2*i-1], KEYS[2*i]
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, m in ipairs(expired) do
    local amt = tonumber(string.match(m, ':(%d+)$'))
    redis.call('HINCRBY', h, 'reserved', -amt)
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
  local limit = tonumber(ARGV[6 + 3*i - 2])
  local hard = ARGV[6 + 3*i - 1] == '1'
  local used = tonumber(redis.call('HGET', h, 'spent') or '0')
             + tonumber(redis.call('HGET', h, 'reserved') or '0')
  -- past the margin floor, with what is in flight: the caller degrades or refuses the call
  if i == fi and used > flimit then return {3, i, used} end
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
# reserved tokens, actual tokens
SETTLE = """
local rid, amount, actual = ARGV[1], ARGV[2], tonumber(ARGV[3])
local nb = tonumber(ARGV[4])
for i = 1, nb do
  local h, z = KEYS[2*i-1], KEYS[2*i]
  if redis.call('ZREM', z, rid .. ':' .. amount) == 1 then
    redis.call('HINCRBY', h, 'reserved', -tonumber(amount))
  end
  -- a lost counter is reseeded from the ledger, which already holds this call
  if redis.call('HEXISTS', h, 'spent') == 1 then redis.call('HINCRBY', h, 'spent', actual) end
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
    def __init__(self, url: str) -> None:
        self._url = url
        self._redis: Any = None
        self._admit: Any = None
        self._settle: Any = None
        self._seed: Seed | None = None
        self._seeded: set[str] = set()

    async def start(self, rules: list[BudgetRule], seed: Seed) -> None:
        self._redis = connect(self._url)
        self._admit = self._redis.register_script(ADMIT)
        self._settle = self._redis.register_script(SETTLE)
        self._seed = seed
        try:
            await self._redis.ping()
            await self._ensure_seeded(rules, time.time())
        except (RedisError, OSError, StoreError) as exc:
            # start anyway: calls under a budget or limit are refused (503) until it is back
            log.error("redis is unreachable (%s): calls under budgets or limits get 503", exc)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def _ensure_seeded(self, rules: list[BudgetRule], at: float) -> None:
        for rule in rules:
            key, _ = _budget_keys(rule, at)
            if key in self._seeded:
                continue
            try:
                if not await self._redis.hexists(key, "spent"):
                    spent = await self._seed(rule, at) if self._seed else 0
                    await self._redis.hsetnx(key, "spent", spent)
                    await self._redis.expire(key, rule.ttl(at))
            except (RedisError, OSError) as exc:
                raise StoreError(f"redis is unreachable: {exc}") from exc
            self._seeded.add(key)

    async def admit(self, admission: Admission) -> Reservation | Refusal:
        at = admission.at
        budgets = with_floor(admission, at)
        await self._ensure_seeded(budgets, at)
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
        for _ in range(len(budgets) + 2):
            try:
                out = await self._admit(keys=keys, args=args)
            except (RedisError, OSError) as exc:
                raise StoreError(f"redis is unreachable: {exc}") from exc
            if int(out[0]) != 2:
                break
            lost = budgets[int(out[1]) - 1]
            log.warning(
                "budget counter %s was missing in redis: reseeding it from the ledger",
                lost.counter(at),
            )
            self._seeded.discard(_budget_keys(lost, at)[0])
            await self._ensure_seeded([lost], at)
        else:
            raise StoreError("redis keeps losing the budget counters")
        admission.budgets = budgets
        if int(out[0]) == 1:
            return Reservation(admission, soft_exceeded=[budgets[int(i) - 1] for i in out[1:]])
        index, used = int(out[1]), int(out[2])
        if int(out[0]) == 3 and floor is not None:
            return Refusal(floor, used, 0)
        if index <= len(budgets):
            rule = budgets[index - 1]
            return Refusal(rule, used, rule.ttl(at) - 86400)
        retry_ms = int(out[3]) if len(out) > 3 else 1000
        return Refusal(
            admission.rates[index - len(budgets) - 1], used, max(1, retry_ms // 1000 + 1)
        )

    async def settle(self, reservation: Reservation, actual_nano: int, tokens: int) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        a = reservation.admission
        keys: list[str] = []
        for rule in a.budgets:
            keys.extend(_budget_keys(rule, a.at))
        for rate in a.rates:
            if rate.kind == "tpm":
                keys.extend(_rate_keys(rate))
        try:
            await self._settle(
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
            # the hold expires on its own; the ledger keeps the real cost
            raise StoreError(f"redis is unreachable at settlement: {exc}") from exc

    async def spent_nano(self, rule: BudgetRule, at: float) -> int:
        key = _budget_keys(rule, at)[0]
        value = None
        for _ in range(2):
            await self._ensure_seeded([rule], at)
            try:
                value = await self._redis.hget(key, "spent")
            except (RedisError, OSError) as exc:
                raise StoreError(f"redis is unreachable: {exc}") from exc
            if value is not None:
                break
            self._seeded.discard(key)  # lost (Redis restarted empty): seed it again
        return int(value or 0)
