"""The live exit drill: synthetic calls through the gateway's own chain, one provider left out.

The drill proves the remaining targets answer by sending each model a short call (a one-line
prompt, ``max_tokens`` 8) the way a client's call goes: the same stages in the same order, so
the data-class policy, capabilities, retries, fallbacks and breakers apply, with two stages
changed. ``DrillCaller`` stands where authentication stands: the call is the admin's, made for
a tenant (``exit-drill`` unless one is named, whose class floor and budgets then apply).
``Without`` stands right after resolution and removes every target of the excluded provider
with ``call.narrow``, so nothing after it (a retry, a fallback, a degradation, a router) can
send the call there. The calls are metered under the feature ``exit-drill`` (their cost shows in
the usage and savings reports) and ask the cache not to answer them (``Cache-Control:
no-cache``): a stored answer proves nothing about a provider.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import orjson
from multidict import CIMultiDict

from passerelle.errors import APIError, PermissionDeniedError
from passerelle.pipeline.answer import AnswerStream, deliver
from passerelle.pipeline.auth import Auth
from passerelle.pipeline.chain import Next, Stage, build_chain
from passerelle.pipeline.context import Call
from passerelle.pipeline.parse import FEATURE_HEADER
from passerelle.pipeline.resolve import Resolve
from passerelle.sovereignty.classes import HEADER as CLASS_HEADER
from passerelle.sovereignty.drill import DRILL_FEATURE, LiveResult
from passerelle.tenancy import ApiKey

log = logging.getLogger("passerelle.drill")
PROMPT = "This is a connectivity check. Reply with the single word OK."
MAX_TOKENS = 8


class DrillCaller:
    """In place of authentication: the drill's calls belong to ``tenant``."""

    def __init__(self, tenant: str) -> None:
        self._key = ApiKey(key_id=DRILL_FEATURE, tenant=tenant, digest="", name=DRILL_FEATURE)

    async def __call__(self, call: Call, next: Next) -> None:
        call.key = self._key
        await next(call)


class Without:
    """Every target of ``provider`` removed from the call, for the whole call."""

    def __init__(self, provider: str) -> None:
        self._provider = provider

    async def __call__(self, call: Call, next: Next) -> None:
        name = self._provider
        call.narrow(
            f"exit drill without {name}", lambda t: t.provider.name != name, PermissionDeniedError
        )
        await next(call)


def drill_chain(stages: Sequence[Stage], provider: str, tenant: str) -> Next:
    """The gateway's ``stages``, the very instances that serve clients
    (their cache, breakers and counters), linked as the drill runs them."""
    out: list[Stage] = []
    for stage in stages:
        out.append(DrillCaller(tenant) if isinstance(stage, Auth) else stage)
        if isinstance(stage, Resolve):
            out.append(Without(provider))
    assert any(isinstance(s, Without) for s in out), "a chain without resolution"
    return build_chain(out)


async def sample(chain: Next, model: str, data_class: str | None = None) -> LiveResult:
    """One synthetic call of ``model``: ok when it was answered in full."""
    headers = CIMultiDict({FEATURE_HEADER: DRILL_FEATURE, "Cache-Control": "no-cache"})
    if data_class is not None:
        headers[CLASS_HEADER] = data_class
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
    }
    call = Call(endpoint="chat.completions", headers=headers, raw_body=orjson.dumps(body))
    error: str | None = None
    try:
        await chain(call)
        answer = deliver(call)
        if isinstance(answer, AnswerStream):  # not asked for; read it whole all the same
            async for _ in answer:
                pass
        await call.finish()
    except APIError as exc:
        error = exc.message
        call.fail(exc)
        try:
            await call.finish()
        except APIError as store_exc:
            error = f"{error}; {store_exc.message}"
    except Exception as exc:  # a drill reports what broke; the gateway's log has the trace
        log.exception("exit drill call %s failed", call.request_id)
        error = f"internal error ({type(exc).__name__}); see the gateway's log"
        call.fail(APIError("internal error"))
        await call.finish()
    return LiveResult(
        model=model,
        ok=error is None,
        latency_ms=(time.perf_counter() - call.started) * 1000.0,
        target=call.target.label if call.target is not None else None,
        error=error,
        request_id=call.request_id,
    )
