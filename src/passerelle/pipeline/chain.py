"""The order of the request path, in one place.

    auth → parse → resolve → [policy] → [budget] → meter → [cache] → dispatch

Each stage is a small object with ``async __call__(call, next)``; ``build_chain`` links them once at
start-up, so a request pays one bound call per stage and nothing else. Stages named in brackets
come with their own issues (data-class policy and PII, budgets and rate limits, caching); they slot
in here and nowhere else. Why this order: authentication before any parsing of an unknown caller's
body; the model is resolved to its targets before the budget reserves their worst-case cost;
metering wraps the cache so a hit is recorded too; dispatch is the only stage that talks to
providers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Protocol

from passerelle.pipeline.context import Call

Next = Callable[[Call], Awaitable[None]]


class Stage(Protocol):
    async def __call__(self, call: Call, next: Next) -> None: ...


async def _end(call: Call) -> None:
    return None


def build_chain(stages: Sequence[Stage]) -> Next:
    handler: Next = _end
    for stage in reversed(stages):
        handler = partial(stage.__call__, next=handler)
    return handler
