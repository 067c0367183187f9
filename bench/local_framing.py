"""How well the embedded base model answers under each prompt framing, and how fast it generates.

The shipped Gemma 3 270M is a base model: how a chat is written out as text decides whether it
answers, babbles or stops. This asks 16 short prompts with a checkable answer under several
framings, through ``LocalProvider`` itself (so the first-token rule, stop sequences and trimming
are the production ones; only the framing function is swapped), greedy and sampled, and prints
correct answers, empty answers, answers that stopped on their own and clean ones (no runaway
text). The findings are kept in the docstring of ``passerelle/providers/local.py``.

    python bench/local_framing.py                # every framing, greedy + t=0.7 x 4 seeds
    python bench/local_framing.py --temperatures 0 0.3 0.7 1.0 --framings chosen
    python bench/local_framing.py --speed        # tokens/s with 1 and 2 threads
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import orjson

from passerelle.providers import local
from passerelle.providers.base import UpstreamRequest
from passerelle.providers.local import LocalProvider
from passerelle.providers.local_framing import Framing, message_text
from passerelle.providers.settings import LocalSettings

Check = Callable[[str], bool]


def has(*words: str, n: int = 1) -> Check:
    def check(text: str) -> bool:
        low = text.lower()
        return sum(bool(re.search(rf"\b{re.escape(w)}\b", low)) for w in words) >= n

    return check


def ask(text: str, system: str | None = None) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}] * bool(system) + [
        {"role": "user", "content": text}
    ]


PROMPTS: list[tuple[str, list[dict[str, str]], Check]] = [
    ("capital-fr", ask("What is the capital of France?"), has("paris")),
    ("capital-jp", ask("What is the capital of Japan?"), has("tokyo")),
    ("add", ask("What is 2 + 3?"), has("5", "five")),
    ("mul", ask("What is 10 times 4?"), has("40", "forty")),
    (
        "colors",
        ask("Name three colors."),
        has(
            "red",
            "blue",
            "green",
            "yellow",
            "black",
            "white",
            "orange",
            "purple",
            "pink",
            "brown",
            n=3,
        ),
    ),
    ("translate", ask("Translate 'thank you' to French."), has("merci")),
    (
        "summary",
        ask(
            "Summarize in one sentence: The cat slept on the warm windowsill all "
            "afternoon, ignoring the birds outside, until its owner came home and fed "
            "it dinner."
        ),
        has("cat"),
    ),
    ("sky", ask("What color is the sky on a clear day?"), has("blue")),
    ("week", ask("How many days are in a week?"), has("7", "seven")),
    ("romeo", ask("Who wrote Romeo and Juliet?"), has("shakespeare")),
    ("planet", ask("What is the largest planet in our solar system?"), has("jupiter")),
    ("opposite", ask("What is the opposite of hot?"), has("cold")),
    (
        "pirate",
        ask("Say hello.", "You are a pirate."),
        has("ahoy", "matey", "arr", "ye", "pirate", "aye", "hearties"),
    ),
    (
        "one-word",
        ask("What animal says moo?", "Answer with one word."),
        lambda t: has("cow")(t) and len(t.split()) <= 3,
    ),
    (
        "memory",
        [
            {"role": "user", "content": "My name is Alice."},
            {"role": "assistant", "content": "Nice to meet you, Alice!"},
            {"role": "user", "content": "What is my name?"},
        ],
        has("alice"),
    ),
    (
        "french",
        ask("What is the capital of Spain?", "Always answer in French."),
        lambda t: has("madrid")(t) and has("est", "la", "le", "capitale")(t),
    ),
]


def lines(messages: list[dict[str, Any]], user: str, bot: str) -> tuple[str, list[str]]:
    system = " ".join(message_text(m["content"]) for m in messages if m["role"] == "system")
    turns = [
        f"{bot if m['role'] == 'assistant' else user}: {message_text(m['content'])}"
        for m in messages
        if m["role"] != "system"
    ]
    return system, [*turns, f"{bot}:"]


def user_assistant(messages: list[dict[str, Any]]) -> Framing:
    """The framing before this benchmark: system line, then User:/Assistant: lines."""
    system, turns = lines(messages, "User", "Assistant")
    head = [system + "\n"] if system else []
    return Framing("\n".join([*head, *turns]), ("\nUser:", "\nAssistant:", "\nSystem:", "\n\n\n"))


def user_assistant_example(messages: list[dict[str, Any]]) -> Framing:
    system, turns = lines(messages, "User", "Assistant")
    head = (
        "A conversation between a user and a helpful assistant. The assistant answers "
        f"briefly and accurately. {system}"
    ).strip()
    example = "User: What is the capital of Italy?\nAssistant: The capital of Italy is Rome."
    return Framing(
        "\n\n".join([head, example + "\n" + "\n".join(turns)]),
        ("\nUser:", "\nAssistant:", "\nSystem:", "\n\n"),
    )


def question_answer(messages: list[dict[str, Any]]) -> Framing:
    system, turns = lines(messages, "Question", "Answer")
    return Framing(
        "\n\n".join([*[system] * bool(system), "\n".join(turns)]), local.TRANSCRIPT_STOPS
    )


FRAMINGS: dict[str, Callable[[list[dict[str, Any]]], Framing]] = {
    "User:/Assistant:": user_assistant,
    "User:/Assistant: + example": user_assistant_example,
    "Question:/Answer:": question_answer,
    "chosen": local.transcript,
}


def babble(text: str) -> bool:
    rows = [r.strip() for r in text.splitlines() if r.strip()]
    words = text.split()
    return (
        len(text) > 400
        or len(rows) != len(set(rows))
        or (len(words) > 12 and len(set(words)) < len(words) / 3)
    )


async def answer(
    provider: LocalProvider, messages: list[dict[str, Any]], **body: Any
) -> tuple[str, str, int]:
    completion = await provider.complete(
        UpstreamRequest(
            body={"messages": messages, **body}, upstream_model="gemma-3-270m", stream=False
        )
    )
    choice = orjson.loads(completion.body)["choices"][0]
    return choice["message"]["content"], choice["finish_reason"], completion.usage.output_tokens


async def score(
    provider: LocalProvider, temperature: float, seeds: list[int], verbose: bool
) -> str:
    correct = empty = stopped = clean = total = 0
    for seed in seeds:
        for name, messages, check in PROMPTS:
            text, finish, _ = await answer(
                provider, messages, temperature=temperature, seed=seed, max_tokens=64
            )
            total += 1
            correct += bool(text) and check(text)
            empty += not text
            stopped += finish == "stop"
            clean += bool(text) and not babble(text)
            if verbose:
                print(f"    {name:10} {finish:6} {text!r}")
    return f"{correct:>3}/{total} ok {empty} empty {stopped:>3} stopped {clean:>3} clean"


async def quality(args: argparse.Namespace) -> None:
    provider = LocalProvider(
        LocalSettings(name="bench", model="gemma-3-270m", n_threads=args.threads)
    )
    await provider.load()
    chosen = local.transcript
    try:
        for name in args.framings:
            local.transcript = FRAMINGS[name]  # swap the framing only; the rest is production
            for temperature in args.temperatures:
                seeds = [0] if temperature == 0 else list(range(1, args.seeds + 1))
                cell = await score(provider, temperature, seeds, args.verbose)
                print(f"{name:28} t={temperature:<4} {cell}", flush=True)
    finally:
        local.transcript = chosen
        await provider.aclose()


async def speed() -> None:
    story = [{"role": "user", "content": "Tell me a long story about a dragon."}]
    chosen = local.transcript
    # no stop sequences: the story runs to max_tokens
    local.transcript = lambda messages: Framing(
        "User: Tell me a long story about a dragon.\nAssistant:", ()
    )
    try:
        for threads in (1, 2, 1, 2):
            provider = LocalProvider(
                LocalSettings(name="bench", model="gemma-3-270m", n_threads=threads)
            )
            await provider.load()
            await answer(provider, story, temperature=0, max_tokens=8)  # warm up
            start = time.perf_counter()
            _, _, tokens = await answer(provider, story, temperature=0, max_tokens=200)
            elapsed = time.perf_counter() - start
            print(
                f"n_threads={threads}: {tokens} tokens in {elapsed:.2f} s = "
                f"{tokens / elapsed:.1f} tokens/s",
                flush=True,
            )
            await provider.aclose()
    finally:
        local.transcript = chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framings", nargs="+", default=list(FRAMINGS), choices=list(FRAMINGS))
    parser.add_argument("--temperatures", nargs="+", type=float, default=[0.0, 0.7])
    parser.add_argument("--seeds", type=int, default=4, help="samples per prompt when t > 0")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--speed", action="store_true", help="measure tokens/s instead")
    parser.add_argument("--verbose", action="store_true", help="print every answer")
    args = parser.parse_args()
    asyncio.run(speed() if args.speed else quality(args))


if __name__ == "__main__":
    main()
