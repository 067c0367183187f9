"""Personal data in a call: found before it leaves, replaced by placeholders, put back after.

The stage stands after the data-class policy (which gave the call its class) and before the
cache (whose key then holds placeholders, never values). Everything a provider would receive is
read: the system prompt and every turn of a chat (text parts too), the arguments of the tool
calls in the history and the tools' results, a legacy completion's ``prompt`` and an embedding's
``input``. What the call's class says (``personal_data``) then applies:

- ``allow``: nothing is looked for, at no cost, unless ``sovereignty.personal_class`` could
  raise the call;
- ``block``: a call with personal data is refused (403 ``personal_data_blocked``, naming the
  types found) and nothing is sent;
- ``pseudonymise``: each value becomes its placeholder (``sovereignty/placeholders.py``) in the
  body the providers get, ``call.pseudonymised`` counts them by type (for the audit trail), and
  an answer transformer puts the values back into the answer, plain or streamed
  (``pipeline/restore.py``). The client's own body of another dialect (an Anthropic call a
  provider would take natively) is dropped, so only the canonical body, pseudonymised, leaves.

With ``personal_class`` set, a call in which personal data is found is raised to that class:
its targets are narrowed again to what that class allows (``call.narrow``, so no retry,
fallback or degradation escapes it) and that class's ``personal_data`` applies.

It fails closed. The detector (``sovereignty/pii.py``) is CPU work: it runs in one thread of its
own, off the event loop, within ``detection.timeout_ms``; a detector that fails or runs out of
time refuses the call (503 ``personal_data_detection_failed``) and a body it cannot read (token
arrays instead of text) is refused too (400 ``personal_data_undetectable``): no upstream call
without the analysis.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from passerelle.config.sovereignty import SovereigntyConfig
from passerelle.errors import InvalidRequestError, PermissionDeniedError, ServiceUnavailableError
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.pipeline.policy import apply_class
from passerelle.pipeline.restore import RestoreAnswer
from passerelle.sovereignty.classes import DataClass, DataPolicy
from passerelle.sovereignty.french_ids import Span
from passerelle.sovereignty.pii import Detector, everywhere
from passerelle.sovereignty.placeholders import Pseudonyms

Slot = tuple[Any, Any]  # (container, key): where one text of the body lives


class PersonalDataBlockedError(PermissionDeniedError):
    """The call's data class refuses personal data, and the call has some."""

    code = "personal_data_blocked"


class DetectionFailedError(ServiceUnavailableError):
    """Personal data could not be looked for: the call is not sent (fail closed)."""

    code = "personal_data_detection_failed"


class UndetectableInputError(InvalidRequestError):
    """The body holds what the detector cannot read (token arrays)."""

    code = "personal_data_undetectable"


def text_slots(endpoint: str, body: dict[str, Any]) -> list[Slot]:
    """Every text of ``body`` a provider receives, in conversation order."""
    if endpoint == "embeddings":
        return _input_slots(body, "input")
    if endpoint == "completions":
        return _input_slots(body, "prompt")
    slots: list[Slot] = []
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            slots.append((message, "content"))
        elif isinstance(content, list):
            slots += [(p, "text") for p in content if isinstance(p, dict) and _is_text(p, "text")]
        if _is_text(message, "refusal"):
            slots.append((message, "refusal"))
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and _is_text(function, "arguments"):
                slots.append((function, "arguments"))
        function = message.get("function_call")
        if isinstance(function, dict) and _is_text(function, "arguments"):
            slots.append((function, "arguments"))
    return slots


def _is_text(container: dict[str, Any], key: str) -> bool:
    return isinstance(container.get(key), str)


def _input_slots(body: dict[str, Any], field: str) -> list[Slot]:
    value = body.get(field)
    if isinstance(value, str):
        return [(body, field)]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [(value, i) for i in range(len(value))]
    raise UndetectableInputError(
        f"{field} is given as tokens, which cannot be checked for personal data; this data "
        "class asks for it to be checked, so send text",
        param=field,
    )


def needs_detection(data_class: DataClass | None, raise_to: DataClass | None) -> bool:
    """Whether a call of this class is looked at: its class does not allow personal data, or
    personal data would raise it."""
    if data_class is None:
        return False
    raises = raise_to is not None and data_class.rank < raise_to.rank
    return data_class.personal_data != "allow" or raises


class PersonalData:
    """``personal_class`` is the class a call with personal data is raised to, if any."""

    def __init__(
        self, detector: Detector, *, personal_class: DataClass | None, timeout_s: float
    ) -> None:
        self._detector = detector
        self._raise_to = personal_class
        self._timeout_s = timeout_s
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="personal-data")

    async def __call__(self, call: Call, next: Next) -> None:
        if not needs_detection(call.data_class, self._raise_to):
            await next(call)
            return
        body: dict[str, Any] = orjson.loads(orjson.dumps(call.body))  # a copy: the client's stays
        slots = text_slots(call.endpoint, body)
        texts = [container[key] for container, key in slots]
        found = await self._analysed(texts)
        if not any(found):
            await next(call)
            return
        data_class = self._raised(call)
        if data_class.personal_data == "block":
            types = sorted({s.entity for spans in found for s in spans})
            raise PersonalDataBlockedError(
                f"data class '{data_class.name}' refuses personal data, and this request holds "
                f"some ({', '.join(types)}); nothing was sent"
            )
        if data_class.personal_data == "pseudonymise":
            pseudonyms = Pseudonyms()
            for (container, key), text, spans in zip(slots, texts, found, strict=True):
                if spans:
                    container[key] = pseudonyms.replace(text, spans)
            call.body = body
            call.native_body = None  # the client's own body would carry the values
            call.pseudonymised = pseudonyms.counts()
            call.response_headers["x-passerelle-pseudonymised"] = ",".join(
                f"{t}={n}" for t, n in sorted(call.pseudonymised.items())
            )
            call.transform(RestoreAnswer(pseudonyms))
        await next(call)

    def _raised(self, call: Call) -> DataClass:
        """The call's class, raised to ``personal_class`` now that personal data was found."""
        current, to = call.data_class, self._raise_to
        assert current is not None
        if to is None or current.rank >= to.rank:
            return current
        apply_class(call, to, " (personal data found)")
        return to

    async def _analysed(self, texts: list[str]) -> list[tuple[Span, ...]]:
        recalled = [self._detector.recalled(t) if t else () for t in texts]
        if all(r is not None for r in recalled):  # all read before: no trip to the thread
            return everywhere(texts, [r for r in recalled if r is not None])
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._thread, self._detect_all, texts)
        try:
            return await asyncio.wait_for(work, self._timeout_s)
        except TimeoutError as exc:
            raise DetectionFailedError(
                f"personal data could not be looked for within {self._timeout_s * 1000:g} ms "
                "(sovereignty.detection.timeout_ms); nothing was sent"
            ) from exc
        except Exception as exc:
            raise DetectionFailedError(
                "personal data could not be looked for, so nothing was sent; try again shortly"
            ) from exc

    def _detect_all(self, texts: list[str]) -> list[tuple[Span, ...]]:
        return everywhere(texts, [self._detector.detect(t) if t else () for t in texts])

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


def personal_data_stage(policy: DataPolicy, sovereignty: SovereigntyConfig) -> PersonalData | None:
    """The stage, with its detector loaded, when some data class needs it; None when none does
    (every class allows personal data and none is raised), and no model is loaded at all."""
    raise_to = policy.classes[sovereignty.personal_class] if sovereignty.personal_class else None
    if not any(needs_detection(c, raise_to) for c in policy.classes.values()):
        return None
    detection = sovereignty.detection
    return PersonalData(
        Detector(detection.languages),
        personal_class=raise_to,
        timeout_s=detection.timeout_ms / 1000,
    )
