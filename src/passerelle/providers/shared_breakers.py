"""A provider's breaker and cooling shared by every replica, in Redis, one Lua script per step.

Without Redis each replica learns alone that a provider is down (``LocalHealth``). With it, a
failure seen by replica A opens the provider's shared breaker for replica B, and a rate limit's
``Retry-After`` cools the target for both. State lives in one hash per provider,
``passerelle:breaker:<provider>``: ``n`` (consecutive failures), ``open_until``, ``trial_until``
(the lease of the half-open trial, so a replica that dies holding it frees it), ``run:<tenant>``
(the current run of answer failures per tenant) and ``cool:<model>``; times are Redis's own
(``TIME``), so replicas' clocks never meet. Each transition is one script (failure, success,
trial claim) that answers the state it left; a read script refreshes a replica's copy.

The hot path stays in process: each replica keeps the state it last saw, re-reads it at most every
``READ_TTL_S``, and a closed breaker with nothing counted costs no round trip (``claim`` and
``succeeded`` only go to Redis when there is something to claim or to clear). Redis decides the
provider's shared breaker; the in-process ``CircuitBreaker`` keeps the tenants' own breakers and
is kept up to date as the fallback: Redis unreachable means that one alone decides, logged once,
and never a refused call.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from passerelle.errors import ProviderError
from passerelle.providers.resilience import (
    TRIAL_WAIT_S,
    CircuitBreaker,
    Fault,
    classify,
    cooling_s,
)

log = logging.getLogger("passerelle.breakers")

PREFIX = "passerelle:breaker:"
READ_TTL_S = 1.0  # how stale a replica's copy of the shared state may be
RETRY_S = 5.0  # after Redis failed, how long the in-process breaker decides alone
TRIAL_LEASE_MS = 60_000
KEEP_MS = 3_600_000  # a provider's hash outlives its last write by an hour
MAX_FIELDS = 10_000  # tenants in a run and cooling models are bounded

# the shared state of KEYS[1] as {n, open_left_ms, trial_left_ms, counted, {model, left_ms...}}
SNAPSHOT = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function snapshot(key, now)
  local h = redis.call('HGETALL', key)
  local n, open, trial, runs, cool = 0, 0, 0, 0, {}
  for i = 1, #h, 2 do
    local f, v = h[i], tonumber(h[i + 1])
    if f == 'n' then n = v
    elseif f == 'open_until' then open = v
    elseif f == 'trial_until' then trial = v
    elseif string.sub(f, 1, 4) == 'run:' then runs = runs + 1
    elseif string.sub(f, 1, 5) == 'cool:' and v > now then
      table.insert(cool, string.sub(f, 6))
      table.insert(cool, v - now)
    end
  end
  return {n, math.max(0, open - now), math.max(0, trial - now), runs, cool}
end
local key = KEYS[1]
local now = now_ms()
"""

READ = SNAPSHOT + "return snapshot(key, now)\n"

# ARGV: fault (provider|answer|none), tenant, threshold, cooldown ms, per-tenant cap,
#       model, cool ms (0: none), whether this replica holds the trial (1|0)
FAILURE = (
    (
        SNAPSHOT
        + """
local threshold, cooldown, cap = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local small = redis.call('HLEN', key) < @MAX_FIELDS@
if tonumber(ARGV[7]) > 0 then
  local f, untl = 'cool:' .. ARGV[6], now + tonumber(ARGV[7])
  if untl > tonumber(redis.call('HGET', key, f) or '0') and (small or redis.call('HEXISTS', key, f) == 1) then
    redis.call('HSET', key, f, untl)
  end
end
if ARGV[8] == '1' then redis.call('HDEL', key, 'trial_until') end
local function fail()
  local n = redis.call('HINCRBY', key, 'n', 1)
  if n >= threshold then
    redis.call('HSET', key, 'open_until', now + cooldown)
    redis.call('HDEL', key, 'trial_until')
  end
end
if ARGV[1] == 'provider' then
  fail()
elseif ARGV[1] == 'answer' and small then
  redis.call('HINCRBY', key, 'run:' .. ARGV[2], 1)
  local h = redis.call('HGETALL', key)
  local tenants, counted = 0, 0
  for i = 1, #h, 2 do
    if string.sub(h[i], 1, 4) == 'run:' then
      tenants = tenants + 1
      counted = counted + math.min(tonumber(h[i + 1]), cap)
    end
  end
  if tenants >= 2 and counted >= threshold then
    local n = tonumber(redis.call('HGET', key, 'n') or '0')
    if n < threshold - 1 then redis.call('HSET', key, 'n', threshold - 1) end
    fail()
  end
end
redis.call('PEXPIRE', key, @KEEP_MS@)
return snapshot(key, now)
"""
    )
    .replace("@MAX_FIELDS@", str(MAX_FIELDS))
    .replace("@KEEP_MS@", str(KEEP_MS))
)

SUCCESS = (
    SNAPSHOT
    + """
local drop = {'n', 'open_until', 'trial_until'}
for _, f in ipairs(redis.call('HKEYS', key)) do
  if string.sub(f, 1, 4) == 'run:' then table.insert(drop, f) end
end
redis.call('HDEL', key, unpack(drop))
return snapshot(key, now)
"""
)

# ARGV: threshold. Answers {1 (may go) | 0, snapshot}
CLAIM = (
    (
        SNAPSHOT
        + """
local n = tonumber(redis.call('HGET', key, 'n') or '0')
if n < tonumber(ARGV[1]) then return {1, snapshot(key, now)} end
if now < tonumber(redis.call('HGET', key, 'open_until') or '0') or
   now < tonumber(redis.call('HGET', key, 'trial_until') or '0') then
  return {0, snapshot(key, now)}
end
redis.call('HSET', key, 'trial_until', now + @TRIAL_LEASE_MS@)
redis.call('PEXPIRE', key, @KEEP_MS@)
return {1, snapshot(key, now)}
"""
    )
    .replace("@TRIAL_LEASE_MS@", str(TRIAL_LEASE_MS))
    .replace("@KEEP_MS@", str(KEEP_MS))
)


@dataclass
class Seen:
    """The shared state as this replica last saw it, in its own clock's time."""

    n: int = 0
    open_until: float = 0.0
    trial_until: float = 0.0
    runs: int = 0
    cool_until: dict[str, float] = field(default_factory=dict)
    read_at: float = -math.inf


class SharedHealth:
    """``TargetHealth`` of a provider across replicas (see the module)."""

    def __init__(
        self,
        scripts: Scripts,
        provider: str,
        *,
        failures: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = CircuitBreaker(failures=failures, cooldown_s=cooldown_s, clock=clock)
        self._scripts = scripts
        self._key = PREFIX + provider
        self._threshold = failures
        self._cooldown_ms = int(cooldown_s * 1000)
        self._cap = max(1, math.ceil(failures / 2))
        self._clock = clock
        self._seen = Seen()
        self._holding_trial = False
        self._down_until = -math.inf

    # -- reads --------------------------------------------------------------------------------

    async def wait_s(self, tenant: str | None, model: str) -> float:
        now = self._clock()
        if now < self._down_until:
            return self.local.wait_s(tenant, model)
        if now - self._seen.read_at >= READ_TTL_S:
            self._seen.read_at = now  # one read per interval, however many calls ask meanwhile
            if await self._run(self._scripts.read, []) is None:
                return self.local.wait_s(tenant, model)
        # Redis keeps the provider's breaker: here only the tenant's own breaker and cooling
        local = self.local.wait_s(tenant, model, shared=False)
        seen = self._seen
        shared = max(0.0, seen.cool_until.get(model, 0.0) - now)
        if seen.n >= self._threshold:
            shared = max(shared, seen.open_until - now)
            if seen.open_until <= now and seen.trial_until > now:
                shared = max(shared, TRIAL_WAIT_S)
        return max(local, shared)

    # -- transitions ----------------------------------------------------------------------------

    async def claim(self, tenant: str | None) -> bool:
        down = self._clock() < self._down_until
        if not self.local.allow(tenant, shared=down):
            return False
        if down or self._seen.n < self._threshold:
            return True  # Redis unreachable, or closed as last seen: no round trip
        answer = await self._run(self._scripts.claim, [self._threshold], snapshot_at=1)
        if answer is None:
            return True
        if int(answer[0]) != 1:
            self.local.abandon(tenant)
            return False
        self._holding_trial = self._seen.n >= self._threshold
        return True

    async def succeeded(self, tenant: str | None) -> None:
        self.local.success(tenant)
        if self._seen.n or self._seen.runs or self._holding_trial:
            self._holding_trial = False
            await self._run(self._scripts.success, [])

    async def failed(self, tenant: str | None, model: str, exc: ProviderError) -> None:
        seconds = cooling_s(exc)
        if seconds:
            self.local.cool(model, seconds)
        fault = classify(exc)
        self.local.failure(tenant, fault)
        await self._report(tenant, fault, model, seconds)

    async def abandon(self, tenant: str | None) -> None:
        self.local.abandon(tenant)
        await self._report(tenant, Fault.NONE, "", 0.0)

    async def _report(self, tenant: str | None, fault: Fault, model: str, cool_s: float) -> None:
        held, self._holding_trial = self._holding_trial, False
        if fault is Fault.NONE and not cool_s and not held:
            return  # nothing for the other replicas to learn
        args = [fault.value, tenant or "", self._threshold, self._cooldown_ms, self._cap]
        await self._run(self._scripts.failure, [*args, model, int(cool_s * 1000), 1 if held else 0])

    # -- Redis ----------------------------------------------------------------------------------

    async def _run(self, script: Any, args: list[Any], snapshot_at: int | None = None) -> Any:
        """Run a script and keep the state it answers; None when Redis could not be reached."""
        if self._clock() < self._down_until:
            return None
        try:
            answer = await script(keys=[self._key], args=args)
        except (RedisError, OSError) as exc:
            if self._down_until == -math.inf:
                log.warning(
                    "breaker state in Redis unreachable (%s): each replica decides alone", exc
                )
            self._down_until = self._clock() + RETRY_S
            return None
        if self._down_until != -math.inf:
            log.info("breaker state in Redis reachable again")
            self._down_until = -math.inf
        self._keep(answer[snapshot_at] if snapshot_at is not None else answer)
        return answer

    def _keep(self, snap: list[Any]) -> None:
        now = self._clock()
        n, open_ms, trial_ms, runs, cool = snap
        pairs = [(cool[i], cool[i + 1]) for i in range(0, len(cool), 2)]
        self._seen = Seen(
            n=int(n),
            open_until=now + int(open_ms) / 1000,
            trial_until=now + int(trial_ms) / 1000,
            runs=int(runs),
            cool_until={_text(m): now + int(ms) / 1000 for m, ms in pairs},
            read_at=now,
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Scripts:
    """The Redis client breakers use and its scripts (sent once, then called by their hash)."""

    def __init__(self, url: str) -> None:
        # short timeouts: an unreachable Redis must cost a call little before the fallback
        self.client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.read = self.client.register_script(READ)
        self.claim = self.client.register_script(CLAIM)
        self.success = self.client.register_script(SUCCESS)
        self.failure = self.client.register_script(FAILURE)

    async def close(self) -> None:
        await self.client.aclose()
