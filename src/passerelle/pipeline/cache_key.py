"""What the answer cache may do for a call, and the exact cache's key.

The key is a SHA-256 over, each part framed by its length so no two sequences of parts can spell
the same bytes: the tenant; the endpoint (the client's dialect: a chat completion, an Anthropic
message and a Responses call never share an entry); the route the call is on, by name, and the
targets the call may use on it (a route changed in the configuration starts afresh, and a call a
policy or a capability narrowed to fewer targets never gets an answer one of the others gave);
its data class, when a policy gave it one; the canonical chat body and, for another dialect, the client's own body, each as JSON with sorted keys. Every field
of both bodies is in the key (tools, ``tool_choice``, ``response_format``, ``temperature``,
``top_p``, ``seed``, ``max_tokens``, ``stop``, ``n``, ``logit_bias``, a provider's own extras...)
except those that provably do not change the answer (``IGNORED``): ``model`` (the route stands for
it), ``stream`` and ``stream_options`` (either form is served from either), ``metadata`` (notes
kept with the completion, never read by the model) and the end-user identifiers ``user`` and
``safety_identifier`` (abuse monitoring; in the key with ``per_user``). A field not named there,
known or not, is in the key.

Whether to look up and whether to keep (``decide``): only chat-shaped endpoints are cached; a
model can be left out; a sampled call (``temperature`` above 0, or absent: every provider's
default samples) is neither looked up nor kept unless ``allow_sampled``; ``Cache-Control:
no-cache`` asks for a fresh answer, which then replaces the entry, and ``no-store`` keeps the
call's answer out (it may still be answered from an entry already there).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from passerelle.pipeline.context import Call
from passerelle.store.records import CacheOutcome

IGNORED = frozenset({"model", "stream", "stream_options", "metadata", "user", "safety_identifier"})
END_USER = frozenset({"user", "safety_identifier"})
CACHED_ENDPOINTS = frozenset({"chat.completions", "messages", "responses"})


@dataclass(frozen=True, slots=True)
class CachePolicy:
    allow_sampled: bool = False
    models: frozenset[str] | None = None  # None: every model
    except_models: frozenset[str] = frozenset()
    per_user: bool = False
    max_entry_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Decision:
    look_up: bool
    keep: bool

    @property
    def outcome(self) -> CacheOutcome:
        """What the ledger says when no entry answers."""
        if self.look_up:
            return CacheOutcome.MISS
        return CacheOutcome.REFRESH if self.keep else CacheOutcome.BYPASS


BYPASS = Decision(look_up=False, keep=False)


def cache_control(call: Call) -> frozenset[str]:
    value = call.headers.get("Cache-Control")
    if not value:
        return frozenset()
    return frozenset(d.strip().lower().split("=", 1)[0] for d in value.split(","))


def sampled(body: dict[str, Any]) -> bool:
    """Will the answer be drawn at random? Absent, the providers' default temperature is above 0
    (1 for OpenAI and Anthropic)."""
    t = body.get("temperature")
    return not (isinstance(t, int | float) and not isinstance(t, bool) and t == 0)


def decide(call: Call, policy: CachePolicy) -> Decision:
    route = call.route
    if call.endpoint not in CACHED_ENDPOINTS or route is None:
        return BYPASS
    if policy.models is not None and route.model not in policy.models:
        return BYPASS
    if route.model in policy.except_models:
        return BYPASS
    if not policy.allow_sampled and sampled(call.body):
        return BYPASS
    directives = cache_control(call)
    return Decision(look_up="no-cache" not in directives, keep="no-store" not in directives)


def _canonical(body: dict[str, Any], ignored: frozenset[str]) -> bytes:
    return orjson.dumps(
        {k: v for k, v in body.items() if k not in ignored}, option=orjson.OPT_SORT_KEYS
    )


def exact_key(call: Call, *, per_user: bool, body: dict[str, Any] | None = None) -> str:
    """The exact cache's key of ``call`` on the route it is on now (hex); with ``body``, of the
    call as if that were its body (the semantic cache's partition: its body but the prompt)."""
    assert call.route is not None, "a call is resolved before it is cached"
    ignored = IGNORED - END_USER if per_user else IGNORED
    parts = [
        (call.tenant or "").encode(),
        call.endpoint.encode(),
        call.route.model.encode(),
        "\0".join(t.label for t in call.targets).encode(),
        (call.data_class.name if call.data_class is not None else "").encode(),
        _canonical(call.body if body is None else body, ignored),
        _canonical(call.native_body, ignored) if call.native_body is not None else b"",
    ]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()
