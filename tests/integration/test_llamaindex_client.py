"""LlamaIndex's ``OpenAILike`` (``llama-index-llms-openai-like``) against a real gateway process
behind the fake upstream. With its default settings it is not a chat model: ``complete`` and
``stream_complete`` call the legacy ``POST /v1/completions``. Its tool calls need it declared a
chat and function-calling model. Errors keep their class (``openai.RateLimitError`` for a
budget's 429, ``openai.BadRequestError`` for a 400). It has no embeddings of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai_like import OpenAILike

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess
from tests.fakes.upstream import UpstreamProcess
from tests.integration.client_gateway import CLIENT_ENV, THRIFTY_KEY, client_gateway_config

REPLY = "Hello from fake upstream."


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = client_gateway_config(upstream.url)
    with GatewayProcess(tmp_path_factory.mktemp("llamaindex"), config, env=CLIENT_ENV) as g:
        yield g


def llm(gw: GatewayProcess, key: str = TENANT_KEYS["acme"], **kw: object) -> OpenAILike:
    return OpenAILike(model="gpt-4o-mini", api_base=gw.base_url, api_key=key, max_retries=0, **kw)


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def test_with_its_defaults_it_completes_text(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    answer = llm(gw).complete("Say hi")
    assert answer.text == REPLY
    assert fresh_upstream.stats()["by_path"] == {"/v1/completions": 1}
    assert fresh_upstream.stats()["last_request"]["prompt"] == "Say hi"


def test_with_its_defaults_it_streams_text(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    pieces = [r.delta for r in llm(gw).stream_complete("Say hi")]
    assert "".join(p or "" for p in pieces) == REPLY
    assert fresh_upstream.stats()["by_path"] == {"/v1/completions": 1}


def test_as_a_chat_model_it_calls_a_tool_and_reads_its_result(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    model = llm(gw, is_chat_model=True, is_function_calling_model=True)
    tool = FunctionTool.from_defaults(fn=get_weather)
    tools = [tool.metadata.to_openai_tool()]
    question = ChatMessage(role="user", content="Weather in Paris? #tool_call:get_weather")
    first = model.chat([question], tools=tools)
    [call] = first.message.additional_kwargs["tool_calls"]
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "get_weather" and set(arguments) == {"city"}
    result = ChatMessage(
        role="tool",
        content=tool(**arguments).content,
        additional_kwargs={"tool_call_id": call.id, "name": call.function.name},
    )
    second = model.chat([question, first.message, result], tools=tools)
    assert second.message.content == f"The tool answered: sunny in {arguments['city']}"


def test_a_budget_refusal_is_a_rate_limit_error(gw: GatewayProcess) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        llm(gw, THRIFTY_KEY).complete("hi")
    assert info.value.status_code == 429


def test_a_bad_request_is_a_bad_request_error(gw: GatewayProcess) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        llm(gw, temperature=7).complete("hi")
    assert info.value.param == "temperature"
