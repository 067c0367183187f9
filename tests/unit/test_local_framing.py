"""The embedded engine's framing and parameters as pure functions, and the provider's bookkeeping
around a scripted engine (no model: the real one is driven in tests/integration/test_local_model.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from passerelle.errors import (
    ProviderEngineError,
    ProviderError,
    ProviderOverloadedError,
    ProviderRejectedError,
)
from passerelle.providers.base import UpstreamRequest
from passerelle.providers.local import LocalProvider
from passerelle.providers.local_framing import (
    DEFAULT_TEMPERATURE,
    EXAMPLES,
    IMAGE_MARKERS,
    TRANSCRIPT_STOPS,
    merge_stops,
    message_text,
    requested_stops,
    sampling,
    transcript,
)
from passerelle.providers.local_sampling import Vocabulary
from passerelle.providers.settings import LocalSettings

EXAMPLE_BLOCK = (
    "Question: Good evening!\nAnswer: Good evening! What can I do for you?\n"
    "Question: Who was the first person to walk on the Moon?\nAnswer: Neil Armstrong."
)

# -- the transcript framing ---------------------------------------------------------------------


def test_a_single_question_follows_the_worked_examples_and_ends_on_answer() -> None:
    framing = transcript([{"role": "user", "content": "What is the capital of France?"}])
    assert framing.prompt == (
        f"{EXAMPLE_BLOCK}\n\nQuestion: What is the capital of France?\nAnswer:"
    )
    assert framing.stop == TRANSCRIPT_STOPS


def test_system_and_developer_messages_open_the_prompt_wherever_they_stand() -> None:
    framing = transcript(
        [
            {"role": "system", "content": "You are a pirate."},
            {"role": "user", "content": "Say hello."},
            {"role": "developer", "content": "Be brief."},
        ]
    )
    assert framing.prompt == (
        f"You are a pirate. Be brief.\n\n{EXAMPLE_BLOCK}\n\nQuestion: Say hello.\nAnswer:"
    )


def test_earlier_turns_are_kept_in_order_as_questions_and_answers() -> None:
    framing = transcript(
        [
            {"role": "user", "content": "My name is Alice."},
            {"role": "assistant", "content": "Nice to meet you, Alice!"},
            {"role": "user", "content": "What is my name?"},
        ]
    )
    assert framing.prompt.endswith(
        "Question: My name is Alice.\nAnswer: Nice to meet you, Alice!\n"
        "Question: What is my name?\nAnswer:"
    )


def test_blank_lines_inside_a_message_cannot_end_the_exchange_early() -> None:
    framing = transcript([{"role": "user", "content": "  Summarize:\n\nfirst part\n\n\nsecond  "}])
    assert framing.prompt.endswith("Question: Summarize:\nfirst part\nsecond\nAnswer:")
    last_turn = framing.prompt.rsplit("\n\n", 1)[1]
    assert last_turn.startswith("Question: Summarize:")


def test_content_parts_contribute_their_text_only() -> None:
    content = [
        {"type": "text", "text": "Hello "},
        {"type": "image_url", "image_url": {}},
        {"type": "text", "text": "there"},
        "stray",
    ]
    assert message_text(content) == "Hello there"
    assert message_text(None) == ""
    framing = transcript([{"role": "user", "content": content}])
    assert framing.prompt.endswith("Question: Hello there\nAnswer:")


def test_a_conversation_without_user_turns_still_asks_for_an_answer() -> None:
    framing = transcript([{"role": "system", "content": "Greet the user."}])
    assert framing.prompt == f"Greet the user.\n\n{EXAMPLE_BLOCK}\n\nAnswer:"


def test_the_examples_teach_a_form_and_name_no_topic_the_old_one_leaked() -> None:
    # the single example about Italy came back as the answer to "hi" and "Count to five."
    text = " ".join(q + " " + a for q, a in EXAMPLES).lower()
    assert "italy" not in text and "rome" not in text
    assert len(EXAMPLES) == 2 and EXAMPLES[0][1].startswith(EXAMPLES[0][0])  # a greeting, greeted


def test_every_framing_stop_starts_with_a_newline_or_is_an_image_marker() -> None:
    # the engine forbids, as a first token, a newline and any token that holds a stop whole,
    # so no stop sequence can end an answer at once
    assert all(s.startswith("\n") or s in IMAGE_MARKERS for s in TRANSCRIPT_STOPS)
    assert set(IMAGE_MARKERS) <= set(TRANSCRIPT_STOPS)


# -- stop sequences and sampling ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        (None, []),
        ("END", ["END"]),
        (["a", "", "b"], ["a", "b"]),
        ([], []),
        (["x", 3], ["x"]),
    ],
)
def test_requested_stops_accept_every_openai_shape(stop: Any, expected: list[str]) -> None:
    assert requested_stops(stop) == expected


def test_client_stops_come_first_and_duplicates_go() -> None:
    assert merge_stops(["END", "\n\n"], TRANSCRIPT_STOPS) == [
        "END",
        "\n\n",
        "\nQuestion:",
        "\nAnswer:",
        "<start_of_image>",
        "<end_of_image>",
    ]
    assert merge_stops("END", ("\nQ:",)) == ["END", "\nQ:"]
    assert merge_stops(None, ("\nQ:",)) == ["\nQ:"]


def test_sampling_defaults_when_the_body_says_nothing_or_null() -> None:
    for body in ({}, {"temperature": None, "top_p": None, "max_tokens": None, "seed": None}):
        assert sampling(body, 256) == {
            "max_tokens": 256,
            "temperature": DEFAULT_TEMPERATURE,
            "top_p": 0.95,
            "frequency_penalty": 0.0,
            "presence_penalty": 0.0,
            "seed": -1,
        }


def test_sampling_takes_the_clients_values() -> None:
    params = sampling(
        {
            "temperature": 0,
            "top_p": 0.5,
            "max_completion_tokens": 12,
            "max_tokens": 99,
            "seed": 7,
            "presence_penalty": 0.5,
        },
        256,
    )
    assert params["temperature"] == 0.0
    assert params["top_p"] == 0.5
    assert params["max_tokens"] == 12  # max_completion_tokens wins over the older max_tokens
    assert params["seed"] == 7
    assert params["presence_penalty"] == 0.5


def test_sampling_ignores_values_of_the_wrong_type() -> None:
    params = sampling({"temperature": "hot", "seed": True, "max_tokens": -3}, 64)
    assert params["temperature"] == DEFAULT_TEMPERATURE
    assert params["seed"] == -1
    assert params["max_tokens"] == 64


# -- the provider around a scripted engine -----------------------------------------------------


class ScriptedEngine:
    """Stands in for ``llama_cpp.Llama``: plays pieces, calling the logits processor per token."""

    def __init__(
        self,
        pieces: list[str],
        *,
        finish: str = "stop",
        fail: Exception | None = None,
        steps: threading.Semaphore | None = None,
    ) -> None:
        self.pieces = pieces
        self.finish = finish
        self.fail = fail
        self.steps = steps  # when set, each piece waits for one release
        self.calls: list[dict[str, Any]] = []
        self.produced = 0
        self.closed = 0

    def tokenize(self, data: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return [2] * add_bos + list(range(len(data.split())))

    def create_completion(
        self, *, prompt: list[int], stop: list[str], logits_processor: Any, **params: Any
    ) -> Iterator[dict[str, Any]]:
        self.calls.append({"prompt": prompt, "stop": stop, **params})
        try:
            for piece in self.pieces:
                if self.steps is not None:
                    assert self.steps.acquire(timeout=5)
                scores = np.zeros(8)
                for process in logits_processor:
                    scores = process(np.array(prompt), scores)
                self.produced += 1
                yield {"choices": [{"text": piece, "finish_reason": None}]}
            if self.fail is not None:
                raise self.fail
            yield {"choices": [{"text": "", "finish_reason": self.finish}]}
        finally:
            self.closed += 1


def provider_with(tmp_path: Path, engine: ScriptedEngine, **config: Any) -> LocalProvider:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    provider = LocalProvider(LocalSettings(name="on-prem", model=str(gguf), **config))
    provider._llm = engine  # the engine is loaded: no llama.cpp here
    provider._vocabulary = Vocabulary(blank=frozenset({0, 1, 3}), enders=(0, 1))
    return provider


def request(**body: Any) -> UpstreamRequest:
    return UpstreamRequest(
        body={"messages": [{"role": "user", "content": "Say hi"}], **body},
        upstream_model="gemma-3-270m",
        stream=False,
    )


async def test_answer_drops_leading_space_and_counts_every_token(tmp_path: Path) -> None:
    engine = ScriptedEngine([" ", " Hi", " there."])
    provider = provider_with(tmp_path, engine)
    completion = await provider.complete(request(stop="END"))
    doc = orjson.loads(completion.body)
    assert doc["choices"][0]["message"]["content"] == "Hi there."
    assert doc["choices"][0]["finish_reason"] == "stop"
    prompt_len = len(engine.calls[0]["prompt"])
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (prompt_len, 3)
    assert doc["usage"]["prompt_tokens"] == prompt_len
    assert engine.calls[0]["stop"] == ["END", *TRANSCRIPT_STOPS]
    assert provider._pending == 0
    await provider.aclose()


async def test_stream_sends_role_then_text_then_finish_then_usage(tmp_path: Path) -> None:
    provider = provider_with(tmp_path, ScriptedEngine([" Hello", "!"], finish="length"))
    chunks = [c async for c in provider.stream(request())]
    docs = [orjson.loads(c.data) for c in chunks]
    assert docs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [d["choices"][0]["delta"].get("content") for d in docs[1:3]] == ["Hello", "!"]
    assert docs[3]["choices"][0]["finish_reason"] == "length"
    assert docs[4]["choices"] == [] and chunks[4].usage is not None
    assert chunks[4].usage.output_tokens == 2
    assert not chunks[4].forward  # include_usage was not asked for
    assert provider._pending == 0
    await provider.aclose()


async def test_a_client_that_leaves_stops_the_engine_and_frees_its_place(tmp_path: Path) -> None:
    steps = threading.Semaphore(0)
    engine = ScriptedEngine(["one", " two", " three", " four"], steps=steps)
    provider = provider_with(tmp_path, engine)
    stream = provider.stream(request())
    steps.release()
    assert b"assistant" in (await anext(stream)).data  # the role chunk, with the first piece
    assert b"one" in (await anext(stream)).data
    await stream.aclose()  # the client left mid-answer
    assert provider._pending == 0
    steps.release(10)
    for _ in range(100):
        if engine.closed:
            break
        await asyncio.sleep(0.01)
    assert engine.closed == 1
    assert engine.produced < 4  # stopped at the next token, not run to the end
    await provider.aclose()


async def test_an_engine_failure_becomes_a_provider_error(tmp_path: Path) -> None:
    provider = provider_with(tmp_path, ScriptedEngine(["partial"], fail=RuntimeError("boom")))
    with pytest.raises(ProviderError, match="RuntimeError") as caught:
        await provider.complete(request())
    assert type(caught.value) is ProviderEngineError and caught.value.status is None
    assert provider._pending == 0
    await provider.aclose()


async def test_a_prompt_over_the_context_window_is_the_clients_error(tmp_path: Path) -> None:
    too_long = ValueError("Requested tokens (3000) exceed context window of 2048")
    provider = provider_with(tmp_path, ScriptedEngine([], fail=too_long))
    with pytest.raises(ProviderError) as caught:
        await provider.complete(request())
    assert type(caught.value) is ProviderRejectedError and caught.value.status == 400
    assert caught.value.code == "context_length_exceeded"
    assert "3000" not in caught.value.message
    assert provider._pending == 0
    await provider.aclose()


async def test_past_max_queue_requests_are_turned_away_with_overloaded(tmp_path: Path) -> None:
    steps = threading.Semaphore(0)
    provider = provider_with(tmp_path, ScriptedEngine(["x"], steps=steps), max_queue=1)
    running = [asyncio.create_task(provider.complete(request())) for _ in range(2)]
    await asyncio.sleep(0.05)  # one generating, one waiting
    with pytest.raises(ProviderError) as caught:
        await provider.complete(request())
    assert type(caught.value) is ProviderOverloadedError and caught.value.status == 503
    steps.release(10)
    await asyncio.gather(*running)
    assert provider._pending == 0
    await provider.complete(request())  # room again
    await provider.aclose()


async def test_an_empty_answer_comes_back_with_its_finish_reason_and_a_warning(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = provider_with(tmp_path, ScriptedEngine([], finish="stop"))
    with caplog.at_level("WARNING", logger="passerelle.providers.local"):
        completion = await provider.complete(request(stop="Hi"))
    doc = orjson.loads(completion.body)
    assert doc["choices"][0]["message"]["content"] == ""
    assert doc["choices"][0]["finish_reason"] == "stop"
    assert "empty answer" in caplog.text
    await provider.aclose()


async def test_nothing_may_end_the_answer_before_it_printed_something(tmp_path: Path) -> None:
    seen: list[list[float]] = []

    class Recording(ScriptedEngine):
        def create_completion(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
            processor = kwargs["logits_processor"][0]
            ids = list(kwargs["prompt"])
            for token in (3, 7, 5):  # a space, a word, another word
                seen.append(list(processor(np.array(ids), np.zeros(4))))
                ids.append(token)
            yield {"choices": [{"text": " ok", "finish_reason": "stop"}]}

    provider = provider_with(tmp_path, Recording([]))
    await provider.complete(request())
    banned = [float("-inf"), float("-inf"), 0.0, 0.0]  # the enders, ids 0 and 1
    assert seen == [banned, banned, [0.0] * 4]  # after a space still banned; after a word free
    await provider.aclose()


def test_the_vocabulary_tells_blank_tokens_from_enders() -> None:
    class Tokens:
        texts = (
            b"",
            b"",
            b" ",
            b"\n",
            b"  \n\n",
            b" Paris",
            b"\nQuestion",
            b"5",
            b"<start_of_image>",
            b"<end_of_image>",
            b"<table>",
            b"<",
        )

        def n_vocab(self) -> int:
            return len(self.texts)

        def detokenize(self, ids: list[int]) -> bytes:
            return self.texts[ids[0]]

    vocabulary = Vocabulary.of(Tokens())
    assert vocabulary.blank == frozenset({0, 1, 2, 3, 4})
    # a space alone may start " 5"; an image marker ends the answer, other tags are text
    assert vocabulary.enders == (0, 1, 3, 4, 6, 8, 9)
