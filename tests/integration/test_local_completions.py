"""Legacy text completions served natively by the embedded engine, through a real gateway.

The local engine continues the prompt as written (no chat framing), one choice per prompt of a
batch, streamed as ``text_completion`` chunks, metered under endpoint ``completions``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai import OpenAI

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

pytestmark = pytest.mark.local_model


@pytest.fixture(scope="module")
def local_gateway(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = fake_upstream_config(upstream.url)
    config["providers"].append({"name": "on-prem", "kind": "local", "model": "gemma-3-270m"})
    config["models"].append(
        {"name": "local", "targets": [{"provider": "on-prem", "upstream_model": "gemma"}]}
    )
    with GatewayProcess(tmp_path_factory.mktemp("local-text"), config) as gw:
        yield gw


@pytest.fixture
def client(local_gateway: GatewayProcess) -> Iterator[OpenAI]:
    with OpenAI(
        base_url=local_gateway.base_url, api_key=TENANT_KEYS["acme"], max_retries=0, timeout=60
    ) as c:
        yield c


def test_the_engine_continues_the_prompt_as_written(
    local_gateway: GatewayProcess, client: OpenAI
) -> None:
    raw = client.completions.with_raw_response.create(
        model="local", prompt="1, 2, 3, 4,", max_tokens=6, temperature=0, echo=True
    )
    answer = raw.parse()
    text = answer.choices[0].text
    assert text.startswith("1, 2, 3, 4, 5")  # the echo, then the continuation, its space kept
    assert answer.object == "text_completion" and answer.usage is not None
    [row] = local_gateway.ledger_rows("request_id = ?", (raw.headers["x-request-id"],))
    assert (row["endpoint"], row["provider"]) == ("completions", "on-prem")
    assert row["output_tokens"] == answer.usage.completion_tokens > 0


def test_a_batch_gets_one_choice_per_prompt(client: OpenAI) -> None:
    answer = client.completions.create(
        model="local", prompt=["Monday, Tuesday,", "1, 2, 3,"], max_tokens=4, temperature=0
    )
    assert [c.index for c in answer.choices] == [0, 1]
    assert answer.choices[1].text.startswith(" 4")


def test_a_streamed_completion_ends_with_its_usage(client: OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model="local",
            prompt="Roses are red,",
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
