"""Test pieces for eligible targets and outbound attempts.

``Exclude`` is a test stage, one line in a chain, that removes the targets of named providers
(as a data-class policy will), refusing with 403 when none is left. ``Recording`` is an attempt
observer that keeps every start and end it sees. ``Named`` is a scripted provider under another
name; ``Flaky`` fails its first attempts with a retryable 503; ``Stuck`` never answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator

from passerelle.errors import PermissionDeniedError, ProviderFailedError
from passerelle.pipeline.attempts import Attempt, AttemptObserver
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.pipeline.targets import Target
from passerelle.providers.base import Completion, StreamChunk, UpstreamRequest
from tests.fakes.answer_stages import ScriptedProvider


class Exclude:
    """The test stage: the call may not use the targets of these providers."""

    def __init__(self, reason: str, *providers: str) -> None:
        self.reason = reason
        self.providers = set(providers)

    async def __call__(self, call: Call, next: Next) -> None:
        call.narrow(self.reason, self.keep, PermissionDeniedError)
        await next(call)

    def keep(self, target: Target) -> bool:
        return target.provider.name not in self.providers


class Recording(AttemptObserver):
    """Keeps a copy of each attempt as it started and as it ended, and how many events the
    answer path had read when it ended (``read_at_end``, set by the test's reader)."""

    def __init__(self) -> None:
        self.starts: list[Attempt] = []
        self.ends: list[Attempt] = []
        self.read = 0  # events read so far, kept by the test
        self.read_at_end: list[int] = []

    def started(self, call: Call, attempt: Attempt) -> None:
        self.starts.append(dataclasses.replace(attempt))

    def ended(self, call: Call, attempt: Attempt) -> None:
        self.ends.append(dataclasses.replace(attempt))
        self.read_at_end.append(self.read)


class Named(ScriptedProvider):
    """A scripted provider with a name of its own; counts what it was asked."""

    def __init__(self, name: str, events: list[tuple[str, bool]]) -> None:
        super().__init__(events)
        self.name = name
        self.asked = 0

    async def complete(self, request: UpstreamRequest) -> Completion:
        self.asked += 1
        return await super().complete(request)


class Flaky(ScriptedProvider):
    """Fails its first ``failures`` attempts with a retryable 503, then answers."""

    def __init__(self, events: list[tuple[str, bool]], failures: int) -> None:
        super().__init__(events)
        self.failures = failures

    def _fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise ProviderFailedError("overloaded", provider=self.name, status=503)

    async def complete(self, request: UpstreamRequest) -> Completion:
        self._fail()
        return await super().complete(request)

    async def stream(self, request: UpstreamRequest) -> AsyncGenerator[StreamChunk, None]:
        self._fail()
        async for chunk in super().stream(request):
            yield chunk


class Stuck(ScriptedProvider):
    """Never answers a plain request (until cancelled)."""

    async def complete(self, request: UpstreamRequest) -> Completion:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")
