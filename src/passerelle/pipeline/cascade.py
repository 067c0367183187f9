"""The cascade: the cheapest model answers first; a check of its answer decides whether the next
one is asked.

The routing stage (``pipeline/route.py``) gives a cascade call its steps, the route's usable
models cheapest first, and moves it to the first. This stage stands just before dispatch, after
the budget (which reserved the worst case of every step together) and the in-flight journal:
each step is one pass through dispatch with the call moved to that step's model
(``call.reroute``, so the call's filters hold there too). An answer that fails its check is not
served but it was paid for: it is kept as an attempt of the call with its usage and cost, so the
ledger has a row for it and the call's cost (its header, its budget settlement) counts both. A
step whose every target fails upstream escalates the same way. The last step's answer is served
whatever its check says.

A check is anything with ``verdict(call, completion) -> str | None`` (None: good enough; else
why not). ``HeuristicCheck``, the default, fails an answer that is empty, stopped by its length
limit, opens with a refusal, or is shorter than ``min_chars``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Protocol

import orjson

from passerelle.errors import APIError
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call, FailedAttempt
from passerelle.pipeline.resolve import Pricer
from passerelle.pipeline.targets import Route
from passerelle.providers.base import Completion

REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|i can(?:'|no)t|i cannot|i'?m (?:not able|unable)|"
    r"as an ai|je ne peux pas|désolé)",
    re.IGNORECASE,
)
CHECK_FAILED = "cascade_check_failed"


class AnswerCheck(Protocol):
    def verdict(self, call: Call, completion: Completion) -> str | None: ...


def _answer(body: bytes) -> tuple[str, str | None, bool]:
    """(text, finish reason, has tool calls) of a chat or legacy completion's first choice."""
    try:
        doc: Any = orjson.loads(body)
        choice = doc["choices"][0]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return "", None, False
    if not isinstance(choice, dict):
        return "", None, False
    message = choice.get("message")
    if isinstance(message, dict):
        text = message.get("content") if isinstance(message.get("content"), str) else ""
        return text or "", choice.get("finish_reason"), bool(message.get("tool_calls"))
    text = choice.get("text")
    return (text if isinstance(text, str) else ""), choice.get("finish_reason"), False


@dataclasses.dataclass(frozen=True, slots=True)
class HeuristicCheck:
    min_chars: int = 1

    def verdict(self, call: Call, completion: Completion) -> str | None:
        text, finish, tools = _answer(completion.body)
        return None if tools else heuristic_verdict(text, finish, self.min_chars)


def heuristic_verdict(text: str, finish: str | None, min_chars: int = 1) -> str | None:
    """Why an answer's text is not good enough, or None (the benchmarks use it too)."""
    if finish == "length":
        return "stopped at its length limit"
    if not text.strip():
        return "empty answer"
    if REFUSAL.match(text):
        return "refusal"
    if len(text.strip()) < min_chars:
        return f"shorter than {min_chars} characters"
    return None


class Cascade:
    """``checks``: the check of each cascade route, by route name."""

    def __init__(
        self, models: dict[str, Route], pricer: Pricer, checks: dict[str, AnswerCheck]
    ) -> None:
        self._models = models
        self._pricer = pricer
        self._checks = checks

    async def __call__(self, call: Call, next: Next) -> None:
        routed = call.routed
        moved = call.route is None or routed is None or call.route.model != routed.model
        if routed is None or len(routed.steps) < 2 or moved:  # moved: a margin floor degraded it
            await next(call)
            return
        check = self._checks[routed.route]
        total = len(routed.steps)
        why = ""
        for i, (model, _targets) in enumerate(routed.steps):
            last = i == total - 1
            if i:
                call.reroute(self._models[model])
                reason = f"cascade step {i + 1} of {total}: step {i} {why}"
                call.routed = dataclasses.replace(
                    routed, model=model, code="cascade-escalated", reason=reason
                )
                call.response_headers["x-passerelle-route"] = call.routed.header()
            try:
                await next(call)
            except APIError as exc:
                if last:
                    raise
                why = f"failed upstream ({exc.code})"
                continue
            completion = call.result
            if last or not isinstance(completion, Completion):
                return
            verdict = check.verdict(call, completion)
            if verdict is None:
                return
            why = f"failed its check ({verdict})"
            self._set_aside(call, completion)

    def _set_aside(self, call: Call, completion: Completion) -> None:
        """The answer is not served: it becomes a billed attempt of the call."""
        target = call.target
        assert target is not None
        usage = completion.usage
        cost = self._pricer.cost(target, call.received_at, usage)
        latency = (call.first_token_at or 0.0) - call.started
        call.failed_attempts.append(
            FailedAttempt(
                call.attempts,
                target.provider.name,
                target.upstream_model,
                CHECK_FAILED,
                round(max(latency, 0.0) * 1000.0, 3),
                usage=usage,
                cost_usd=cost,
            )
        )
        call.result = None
        call.usage = None
        call.first_token_at = None
