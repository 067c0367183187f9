"""Placeholders: stable within a conversation, restored in plain answers and in streams, even
split across events or slightly altered by the model; never restored from what was not issued."""

from __future__ import annotations

import orjson
import pytest

from passerelle.errors import UpstreamError
from passerelle.pipeline.context import Call
from passerelle.pipeline.restore import RestoreAnswer
from passerelle.providers.base import StreamChunk
from passerelle.sovereignty.french_ids import Span
from passerelle.sovereignty.placeholders import Pseudonyms

TEXT = "Jean Dupont writes to Marie Curie; Jean Dupont signs."


def names(text: str, *values: str) -> list[Span]:
    spans = []
    for value in values:
        at = text.find(value)
        while at >= 0:
            spans.append(Span(at, at + len(value), "PERSON"))
            at = text.find(value, at + 1)
    return spans


def pseudonymised() -> tuple[Pseudonyms, str]:
    p = Pseudonyms()
    return p, p.replace(TEXT, names(TEXT, "Jean Dupont", "Marie Curie"))


def test_the_same_value_is_the_same_placeholder_numbered_in_order() -> None:
    p, out = pseudonymised()
    assert out == "<PERSON_1> writes to <PERSON_2>; <PERSON_1> signs."
    assert p.counts() == {"PERSON": 2}


def test_a_conversation_resent_with_one_more_turn_keeps_its_placeholders() -> None:
    first, second = Pseudonyms(), Pseudonyms()
    turn1 = "I am Jean Dupont."
    turn2 = "Marie Curie is my colleague."
    a = first.replace(turn1, names(turn1, "Jean Dupont"))
    b = [second.replace(t, names(t, "Jean Dupont", "Marie Curie")) for t in (turn1, turn2)]
    assert b[0] == a == "I am <PERSON_1>."
    assert b[1] == "<PERSON_2> is my colleague."


def test_phone_spellings_of_one_number_share_a_placeholder() -> None:
    p = Pseudonyms()
    assert p.placeholder("PHONE_NUMBER", "06 12 34 56 78") == "<PHONE_1>"
    assert p.placeholder("PHONE_NUMBER", "+33 6 12 34 56 78") == "<PHONE_1>"
    assert p.placeholder("PHONE_NUMBER", "06.12.34.56.78") == "<PHONE_1>"


@pytest.mark.parametrize(
    "altered",
    ["<PERSON_1>", "<person_1>", "[PERSON_1]", "PERSON_1", "<PERSON 1>", "< PERSON_1 >",
     "{PERSON_1}", "(PERSON-1)", "<Person_1>"],
)  # fmt: skip
def test_a_slightly_altered_placeholder_is_restored(altered: str) -> None:
    p, _ = pseudonymised()
    assert p.restore(f"Dear {altered}, hello") == "Dear Jean Dupont, hello"


@pytest.mark.parametrize("kept", ["person 1", "<PERSON_3>", "<EMAIL_1>", "PERSON_12", "PERSONA_1"])
def test_what_was_not_issued_or_is_only_a_word_is_left_alone(kept: str) -> None:
    p, _ = pseudonymised()
    assert p.restore(f"see {kept} now") == f"see {kept} now"


def chat_event(content: str | None, finish: str | None = None) -> StreamChunk:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    doc = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "choices": [choice]}
    return StreamChunk(orjson.dumps(doc))


def streamed(pieces: list[str]) -> str:
    p, _ = pseudonymised()
    restore, call = RestoreAnswer(p), Call("chat.completions", {}, b"")
    out: list[StreamChunk] = []
    for piece in pieces:
        out += restore.event(call, chat_event(piece))
    out += restore.event(call, chat_event(None, finish="stop"))
    out += restore.flush(call)
    text = ""
    for chunk in out:
        for choice in orjson.loads(chunk.data)["choices"]:
            text += choice["delta"].get("content", "")
    return text


@pytest.mark.parametrize(
    "pieces",
    [
        ["Hello <PERS", "ON_1>, and <PERSON_2>."],
        ["Hello <", "PERSON", "_", "1", ">, and [per", "son_2]."],
        ["Hello <PERSON_1", ">, and <PERSON_2", ">."],
        ["H", "e", "llo ", "<", "P", "E", "RSON_1>, and ", "<PERSON_2>", "."],
    ],
)
def test_a_placeholder_split_across_events_is_restored(pieces: list[str]) -> None:
    assert streamed(pieces) == "Hello Jean Dupont, and Marie Curie."


def test_what_is_held_at_the_end_is_sent_before_the_finishing_event() -> None:
    p, _ = pseudonymised()
    restore, call = RestoreAnswer(p), Call("chat.completions", {}, b"")
    assert restore.event(call, chat_event("Bye <PERSON_1")) != []
    out = restore.event(call, chat_event(None, finish="stop"))
    assert [orjson.loads(c.data)["choices"][0].get("finish_reason") for c in out] == [None, "stop"]
    assert orjson.loads(out[0].data)["choices"][0]["delta"]["content"] == "Jean Dupont"


def test_a_plain_answer_is_restored_in_content_and_tool_arguments() -> None:
    p, _ = pseudonymised()
    message = {
        "role": "assistant",
        "content": "Hi <PERSON_1>",
        "tool_calls": [{"function": {"name": "mail", "arguments": '{"to": "<PERSON_2>"}'}}],
    }
    body = orjson.dumps({"object": "chat.completion", "choices": [{"message": message}]})
    out = orjson.loads(RestoreAnswer(p).body(Call("chat.completions", {}, b""), body))
    restored = out["choices"][0]["message"]
    assert restored["content"] == "Hi Jean Dupont"
    assert orjson.loads(restored["tool_calls"][0]["function"]["arguments"]) == {"to": "Marie Curie"}


def test_an_answer_that_cannot_be_read_is_not_served_unrestored() -> None:
    p, _ = pseudonymised()
    call = Call("chat.completions", {}, b"")
    with pytest.raises(UpstreamError, match="could not be read"):
        RestoreAnswer(p).body(call, b'{"choices": [{"message": {"content": "<PERSON_1>')
    with pytest.raises(UpstreamError, match="could not be read"):
        RestoreAnswer(p).event(call, StreamChunk(b'{"choices": [{"delta": {"content": "<PER'))


def test_streamed_tool_arguments_and_legacy_text_are_restored_too() -> None:
    p, _ = pseudonymised()
    restore, call = RestoreAnswer(p), Call("chat.completions", {}, b"")
    pieces = ['{"to": "<PER', 'SON_2>"}']
    out: list[StreamChunk] = []
    for piece in pieces:
        call_delta = {"index": 0, "function": {"arguments": piece}}
        choice = {"index": 0, "delta": {"tool_calls": [call_delta]}, "finish_reason": None}
        out += restore.event(call, StreamChunk(orjson.dumps({"choices": [choice]})))
    out += restore.flush(call)
    arguments = "".join(
        d["function"]["arguments"]
        for c in out
        for d in orjson.loads(c.data)["choices"][0]["delta"].get("tool_calls", [])
    )
    assert orjson.loads(arguments) == {"to": "Marie Curie"}
    legacy = RestoreAnswer(p)
    events = [{"choices": [{"index": 0, "text": t}]} for t in ("Hi <PERSON", "_1>!")]
    texts = [
        orjson.loads(c.data)["choices"][0]["text"]
        for e in events
        for c in legacy.event(call, StreamChunk(orjson.dumps(e)))
    ]
    texts += [orjson.loads(c.data)["choices"][0]["text"] for c in legacy.flush(call)]
    assert "".join(texts) == "Hi Jean Dupont!"
