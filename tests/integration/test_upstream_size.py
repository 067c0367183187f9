"""An upstream answer is read up to ``max_response_bytes`` and no further.

A client that asks for an enormous answer (a reply of 60,000 words, embeddings of 6,000 inputs)
must not make the gateway hold it in memory: past the provider's bound the attempt fails with a
clear 502, no retry (the same request would bring the same answer), and the call is still in the
ledger.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.fakes.gateway import GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.gateway import openai_provider as provider
from tests.fakes.upstream import UpstreamProcess

CAP = 64 * 1024


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = fake_upstream_config(
        upstream.url,
        providers=[provider("fake", upstream.base_url, max_response_bytes=CAP)],
    )
    with GatewayProcess(tmp_path_factory.mktemp("size"), config) as g:
        yield g


def test_an_answer_over_the_bound_is_a_502_not_read_and_metered(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    client = sdk(gw)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "#words:60000"}]
        )
    assert info.value.status_code == 502
    assert "max_response_bytes" in info.value.message
    assert fresh_upstream.stats()["requests"] == 1  # not retried
    rid = info.value.response.headers["x-request-id"]
    rows = gw.ledger_rows("request_id = ?", (rid,))
    assert rows and rows[-1]["status"] == "error"


def test_embeddings_over_the_bound_are_refused_and_small_ones_pass(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    client = sdk(gw)
    with pytest.raises(openai.APIStatusError) as info:
        client.embeddings.create(model="fake-embed", input=[f"w{i}" for i in range(6000)])
    assert info.value.status_code == 502
    ok = client.embeddings.create(model="fake-embed", input=["a", "b"])
    assert len(ok.data) == 2
