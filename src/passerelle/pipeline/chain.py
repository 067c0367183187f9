"""How the request path is linked, and why its order is what it is.

The order itself is listed once, in ``Gateway.stages()`` (``gateway.py``):

    auth → parse → conversation → resolve → meter → (capture) → idempotency → data-class policy
         → (personal data) → cache → (route) → budget (with the margin floor) → in flight
         → (cascade) → dispatch

Each stage is a small object with ``async __call__(call, next)``; ``build_chain`` links them once at
start-up, so a request pays one bound call per stage and nothing else. The data-class policy,
the personal-data stage (only when a data class asks for personal data to be pseudonymised or
blocked, or ``personal_class`` may raise a call) and the cache are present only when the
configuration has them. Why this order: authentication before
any parsing of an unknown caller's body; a Responses
call's kept conversation (``previous_response_id``) is put in front of it right after parsing,
for its tenant, so everything after sees the whole request; the model is
resolved to its targets before anything prices it; the meter wraps everything after it, so a
refusal, a replay or a cache hit is recorded too; an idempotent replay is served before any
policy or budget would count it again; the data-class policy narrows the targets before anything
reserves for them or chooses among them (and before the cache, whose key holds the targets the
call may use); the personal-data stage needs the call's class and must come before the cache, so that no cache
key (and no stored answer: it holds the placeholders, restored outside it for each call) holds
personal data;
the cache comes before the budget because a hit costs nothing: it reserves nothing and counts
against no budget or rate limit, and a tenant at the end of its budget still gets the answers it
already paid for (a call the margin floor then degrades is kept in the cache under the model that
answered it, ``pipeline/cache.py``); the margin floor may switch the route to a cheaper model, so the
budget stage checks it in the same atomic admission and reserves the worst case of the route it
leaves; in flight journals the call (with that reservation) just before it can cost anything
upstream; dispatch is the only stage that talks to providers. Stages in parentheses are in the
chain only when configured: prompt capture (``prompt_capture:``) writes after the meter's row;
a route (``routes:``) chooses its model after the cache (a hit needs no decision; the key
holds the route's name) and before the budget, so the reservation and any margin-floor
degradation start from the chosen model, and its cascade steps pass through dispatch one by one
after the budget reserved all of them and the journal noted the call.

The answer comes back through the same chain. A stage that must see or rewrite what the provider
says registers, on its way in, an answer observer or transformer on the call (``call.observe``,
``call.transform``; ``pipeline/answer.py``); the answer, a plain body or every event of a
stream alike, passes through them innermost first, so the stage nearest dispatch sees the
provider's answer and the outermost sees what the client gets: the meter counts what the client
was sent, and the idempotency capture stores the answer as the stages inside it made it. A
replayed answer passes only the stages outside the one that replays it, as those are the only
ones that ran. Work for when the answer is complete is registered with ``call.defer``. A client
speaking another dialect than OpenAI's (``call.dialect``, ``protocol/``) has its body translated
to the canonical chat body by parse, which registers the translation of the answer back first, so
it is the outermost step: every stage sees chat-format answers, only the client the dialect's.

Which targets a call may use is the call's too: resolution sets ``call.targets`` (the route's,
less the providers that lack a capability the request needs) and any later stage may narrow it
with ``call.narrow(reason, keep)``, never widen it; ``call.reroute`` (the margin floor's
degradation, a router) applies every filter recorded so far to the new route, so a degraded call
cannot reach a target a policy excluded. A call left with none is refused with the filters and
what each removed. The budget's worst case and dispatch iterate that list only. Dispatch starts
and ends each outbound attempt in one place and shows it to the attempt observers the gateway
registers at start-up (``pipeline/attempts.py``); a stream's attempt ends when the answer path
has read its last event.
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
