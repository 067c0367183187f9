"""Optional capabilities live on the protocols, with defaults, instead of being probed for.

``Provider.load`` (nothing to do unless the provider overrides it), ``Ledger.healthy`` (a store
that cannot tell is healthy; the meter refuses calls while one says it is not), and closing a
stream closes the provider's generator under it, through the idempotency capture too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from passerelle.errors import ServiceUnavailableError
from passerelle.pipeline.answer import AnswerStream, deliver
from passerelle.pipeline.context import Call, ChunkStream
from passerelle.pipeline.idempotency import Capture
from passerelle.pipeline.meter import Meter
from passerelle.pipeline.resolve import Pricer
from passerelle.pricing.catalogue import Catalogue
from passerelle.providers.base import StreamChunk
from passerelle.providers.openai_compat import OpenAICompatProvider
from passerelle.providers.settings import RemoteSettings
from passerelle.providers.transport import HttpTransport
from passerelle.store.base import Ledger
from passerelle.store.records import RevenueEntry, UsageRecord, UsageRow
from passerelle.store.sqlite import SQLiteLedger
from passerelle.tenancy import ApiKey

pytestmark = pytest.mark.asyncio(loop_scope="function")


class DownLedger(Ledger):
    """A ledger that says its store is unreachable; anything else it is asked fails the test."""

    recorded: list[UsageRecord]

    def __init__(self) -> None:
        self.recorded = []

    @property
    def healthy(self) -> bool:
        return False

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def record(self, record: UsageRecord) -> None:
        self.recorded.append(record)

    async def usage(
        self, group_by: Sequence[str], since: datetime | None = None, until: datetime | None = None
    ) -> list[UsageRow]:
        raise AssertionError("not asked")

    async def create_key(self, key: ApiKey) -> None:
        raise AssertionError("not asked")

    async def find_key(self, digest: str) -> ApiKey | None:
        raise AssertionError("not asked")

    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        raise AssertionError("not asked")

    async def records(self, request_id: str) -> list[UsageRecord]:
        raise AssertionError("not asked")

    async def set_revenue(self, entries: Sequence[RevenueEntry]) -> None:
        raise AssertionError("not asked")

    async def list_revenue(self) -> list[RevenueEntry]:
        raise AssertionError("not asked")


def a_call() -> Call:
    return Call(endpoint="chat.completions", headers={}, raw_body=b"{}")


async def test_a_provider_without_a_load_step_inherits_the_default() -> None:
    provider = OpenAICompatProvider(
        RemoteSettings(name="o", kind="openai", base_url="http://127.0.0.1:9/v1"),
        HttpTransport(timeout_s=1, connect_timeout_s=1, max_connections=1),
    )
    assert "load" not in vars(OpenAICompatProvider)
    assert await provider.load() is None
    await provider.aclose()


async def test_a_store_that_cannot_tell_is_healthy(tmp_path: Path) -> None:
    ledger = SQLiteLedger(str(tmp_path / "ledger.db"))
    assert ledger.healthy is True


async def test_the_meter_refuses_a_call_while_the_ledger_says_it_is_down() -> None:
    ledger = DownLedger()
    reached: list[Call] = []

    async def downstream(call: Call) -> None:
        reached.append(call)

    meter = Meter(ledger, Pricer(Catalogue([])))
    with pytest.raises(ServiceUnavailableError) as info:
        await meter(a_call(), downstream)
    assert info.value.code == "ledger_unavailable" and info.value.status == 503
    assert reached == [] and ledger.recorded == []


async def test_closing_a_stream_closes_the_providers_generator() -> None:
    closed: list[str] = []

    async def upstream() -> AsyncGenerator[StreamChunk, None]:
        try:
            for i in range(10):
                yield StreamChunk(data=f'{{"n":{i}}}'.encode())
        finally:
            closed.append("upstream")

    stream = ChunkStream(first=StreamChunk(data=b"{}"), rest=upstream())
    seen: list[StreamChunk] = []
    async for chunk in stream.rest:
        seen.append(chunk)
        break
    await stream.aclose()
    assert closed == ["upstream"] and len(seen) == 1


async def test_closing_a_captured_stream_closes_the_provider_under_it() -> None:
    """Idempotency captures the answer as it passes (an observer on the answer path): closing the
    client's stream must close the provider's stream (and its connection) under it, not leave it
    to garbage collection."""
    closed: list[str] = []

    async def upstream() -> AsyncGenerator[StreamChunk, None]:
        try:
            for i in range(10):
                yield StreamChunk(data=f'{{"n":{i}}}'.encode())
        finally:
            closed.append("upstream")

    call = a_call()
    captured = Capture()
    call.observe(captured)
    call.result = ChunkStream(first=StreamChunk(data=b"{}"), rest=upstream())
    answer = deliver(call)
    assert isinstance(answer, AnswerStream)
    async for chunk in answer:
        if chunk.data != b"{}":
            break
    await answer.aclose()
    assert closed == ["upstream"]
    assert captured.events == [b"{}", b'{"n":0}']
