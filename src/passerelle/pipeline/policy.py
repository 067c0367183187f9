"""The data-class policy: a call's targets narrowed to the providers its class may reach.

The class is decided once per call (``sovereignty/classes.py``: its tenant's or feature's floor,
raised by ``X-Passerelle-Data-Class``) and the targets its class does not admit are removed with
``call.narrow``, before the budget reserves and before anything chooses a target. Because the
filter is recorded on the call, a retry, a fallback, a margin floor's degradation or a router's
choice can only pick among what it left: nothing is ever sent to a provider the policy excludes.
A call left with no target is refused with 403, naming the class, what it allows and the
targets it removed. The answer says which class applied (``x-passerelle-data-class``).
"""

from __future__ import annotations

from passerelle.errors import PermissionDeniedError
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.sovereignty.classes import HEADER, DataClass, DataPolicy


def apply_class(call: Call, data_class: DataClass, why: str = "") -> None:
    """The call is in ``data_class`` from now: said in its answer's headers, and its targets
    narrowed to what the class allows (``why`` ends the filter's reason)."""
    call.data_class = data_class
    call.response_headers["x-passerelle-data-class"] = data_class.name
    if not data_class.unrestricted:
        call.narrow(
            f"policy: {data_class.rule()}{why}",
            lambda t: data_class.admits(t.provider.name, t.jurisdiction),
            PermissionDeniedError,
        )


class DataClassPolicy:
    def __init__(self, policy: DataPolicy) -> None:
        self._policy = policy

    async def __call__(self, call: Call, next: Next) -> None:
        data_class = self._policy.classify(call.headers.get(HEADER), call.tenant, call.feature)
        apply_class(call, data_class)
        await next(call)
