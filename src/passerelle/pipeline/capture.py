"""Prompt capture: the text the router reads of a call, kept for training, where opted in.

Only tenants (or one feature of a tenant) named under ``prompt_capture:`` have their prompts
kept; no other call pays anything, as the stage is not in the chain without that section. The
text is what the learned router reads (``route.prompt_text``), so a router trained on it with
``passerelle router train --from-ledger`` sees at serving time what it saw in training. It is
written once the call's ledger row is (this stage stands after the meter and its work is
deferred after the meter's), only for a served call, and a failed write is logged, never turned
into a failure of an answer the client already has.
"""

from __future__ import annotations

import logging

from passerelle.config.routing import CaptureConfig
from passerelle.errors import StoreError
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.pipeline.route import prompt_text
from passerelle.store.base import Ledger
from passerelle.store.records import Status

log = logging.getLogger("passerelle.capture")


class Capture:
    def __init__(self, ledger: Ledger, captures: list[CaptureConfig]) -> None:
        self._ledger = ledger
        self._whole = {c.tenant for c in captures if c.feature is None}
        self._features = {(c.tenant, c.feature) for c in captures if c.feature is not None}

    def wanted(self, call: Call) -> bool:
        tenant = call.tenant
        return tenant in self._whole or (tenant, call.feature) in self._features

    async def __call__(self, call: Call, next: Next) -> None:
        if self.wanted(call) and call.endpoint != "embeddings":
            call.defer(self._keep)
        await next(call)

    async def _keep(self, call: Call) -> None:
        text = prompt_text(call.body)
        if call.status != Status.OK or not text or call.tenant is None:
            return
        try:
            await self._ledger.capture_prompt(call.request_id, call.tenant, call.feature, text)
        except StoreError as exc:
            log.warning("%s: prompt not captured: %s", call.request_id, exc)
