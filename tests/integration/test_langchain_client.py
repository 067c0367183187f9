"""LangChain's ``ChatOpenAI`` and ``OpenAIEmbeddings`` (``langchain-openai``) against a real
gateway process behind the fake upstream: plain, streamed, a tool call round trip, embeddings,
and errors that keep their class (a budget's 429 is ``openai.RateLimitError``, a bad request
``openai.BadRequestError``, as LangChain re-raises the SDK's)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess
from tests.fakes.upstream import UpstreamProcess
from tests.integration.client_gateway import (
    CLIENT_ENV,
    THRIFTY_KEY,
    WEATHER_TOOL,
    client_gateway_config,
)

REPLY = "Hello from fake upstream."


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = client_gateway_config(upstream.url)
    with GatewayProcess(tmp_path_factory.mktemp("langchain"), config, env=CLIENT_ENV) as g:
        yield g


def chat(gw: GatewayProcess, key: str = TENANT_KEYS["acme"], **kw: object) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", base_url=gw.base_url, api_key=key, max_retries=0, **kw)


def test_a_plain_answer(gw: GatewayProcess, fresh_upstream: UpstreamProcess) -> None:
    answer = chat(gw).invoke("hi #usage:11,5,0")
    assert answer.content == REPLY
    assert answer.usage_metadata is not None and answer.usage_metadata["input_tokens"] == 11


def test_a_streamed_answer(gw: GatewayProcess, fresh_upstream: UpstreamProcess) -> None:
    chunks = list(chat(gw, stream_usage=True).stream("hi #usage:3,4,0"))
    assert "".join(str(c.content) for c in chunks) == REPLY
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage and usage[-1]["output_tokens"] == 4


def test_a_tool_call_round_trip(gw: GatewayProcess, fresh_upstream: UpstreamProcess) -> None:
    model = chat(gw).bind_tools([WEATHER_TOOL])
    question = HumanMessage("Weather in Paris? #tool_call:get_weather")
    first = model.invoke([question])
    [call] = first.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", {"city": "xxxxx"})
    streamed = None
    for chunk in model.stream([question]):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None and streamed.tool_calls[0]["args"] == {"city": "xxxxx"}
    result = ToolMessage("sunny", tool_call_id=call["id"])
    second = model.invoke([question, first, result])
    assert second.content == "The tool answered: sunny"


def test_embeddings(gw: GatewayProcess, fresh_upstream: UpstreamProcess) -> None:
    embedder = OpenAIEmbeddings(
        model="fake-embed",
        base_url=gw.base_url,
        api_key=TENANT_KEYS["acme"],
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    vectors = embedder.embed_documents(["a", "b"])
    assert len(vectors) == 2 and len(vectors[0]) == 8
    assert len(embedder.embed_query("c")) == 8


def test_a_budget_refusal_is_a_rate_limit_error(gw: GatewayProcess) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        chat(gw, THRIFTY_KEY).invoke("hi")
    assert info.value.status_code == 429


def test_a_bad_request_is_a_bad_request_error(gw: GatewayProcess) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        chat(gw, temperature=7).invoke("hi")
    assert info.value.param == "temperature"
