"""Routes through a real gateway, with the openai SDK: rules, a learned router, a cascade.

Three fake targets at three prices (small < medium < big) behind the fake upstream, plus two
cheaper still that a request may not use: ``claude-cheap`` (an Anthropic provider: no
``json_schema``) and ``deadcheap`` (a provider on a closed port whose breaker opens on its first
failure). The learned route's artefact is trained in the fixture, through ``passerelle router
train``, from a tiny outcomes file: easy prompts every model answers, hard ones only ``big`` does.
The attack tests ask for the cheapest model a strategy would choose while a filter or an open
breaker excludes it: it is never chosen, and nothing reaches its provider.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import APIStatusError, BadRequestError, NotFoundError, OpenAI

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, fake_upstream_config, openai_provider
from tests.fakes.upstream import UpstreamProcess

EASY = ["what is 2 plus 2", "what is 3 plus 5", "what is 7 plus 1", "what is 4 plus 4"]
HARD = [
    "prove the theorem on infinitely many primes",
    "prove the theorem on irrational square roots",
    "prove the theorem on the halting problem",
    "prove the theorem on uncountable reals",
]
COST = {"claude-cheap": 0.00001, "small": 0.0001, "big": 0.01}


def _target(provider: str, model: str, usd: float) -> dict[str, Any]:
    return {"provider": provider, "upstream_model": model, "price": {"input": usd, "output": usd}}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _outcomes(path: Path) -> None:
    lines = ["prompt,model,score,cost_usd"]
    for p in EASY + HARD:
        for m, c in COST.items():
            good = m == "big" or p in EASY
            lines.append(f"{p},{m},{1 if good else 0},{c}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("routing")
    _outcomes(work / "outcomes.csv")
    trained = subprocess.run(
        [sys.executable, "-m", "passerelle", "router", "train", "--quiet",
         "--outcomes", str(work / "outcomes.csv"), "--out", str(work / "router.npz")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    config = fake_upstream_config(upstream.url)
    config["providers"] += [
        {"name": "claude", "kind": "anthropic", "base_url": upstream.url,
         "api_key": "env:FAKE_UPSTREAM_KEY", "max_retries": 0, "timeout_s": 10},
        openai_provider("dead", f"http://127.0.0.1:{_closed_port()}/v1", max_retries=0,
                        breaker_failures=1, breaker_cooldown_s=600),
    ]  # fmt: skip
    config["models"] += [
        {"name": "small", "targets": [_target("fake", "small-1", 0.1)]},
        {"name": "medium", "targets": [_target("fake", "medium-1", 1)]},
        {"name": "big", "targets": [_target("fake", "big-1", 10)]},
        {"name": "claude-cheap", "targets": [_target("claude", "claude-cheap-1", 0.01)]},
        {"name": "deadcheap", "targets": [_target("dead", "dead-1", 0.001)]},
    ]
    config["routes"] = [
        {"name": "auto", "strategy": "learned", "router": "router.npz",
         "models": ["big", "small", "claude-cheap"], "quality_target": 0.95},
        {"name": "auto-rules", "strategy": "rules", "models": ["big", "medium", "small"],
         "rules": [{"features": ["support"], "model": "small"},
                   {"min_prompt_tokens": 200, "model": "medium"}]},
        {"name": "auto-attack", "strategy": "rules", "default": "medium",
         "models": ["medium", "claude-cheap", "deadcheap"],
         "rules": [{"features": ["json"], "model": "claude-cheap"}, {"model": "deadcheap"}]},
        {"name": "auto-cascade", "strategy": "cascade", "models": ["big", "small"]},
    ]  # fmt: skip
    config["prompt_capture"] = [{"tenant": "acme"}]
    with GatewayProcess(work, config) as g:
        yield g


@pytest.fixture
def client(gw: GatewayProcess) -> Iterator[OpenAI]:
    with OpenAI(base_url=gw.base_url, api_key=TENANT_KEYS["acme"], max_retries=0) as c:
        yield c


def _chat(client: OpenAI, model: str, text: str, **kw: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )


def _row(gw: GatewayProcess, raw: Any) -> dict[str, Any]:
    rows = gw.ledger_rows("request_id = ? AND status = 'ok'", (raw.headers["x-request-id"],))
    assert len(rows) == 1
    return rows[0]


def test_rules_choose_by_feature_and_prompt_length(gw: GatewayProcess, client: OpenAI) -> None:
    raw = _chat(client, "auto-rules", "hi", extra_headers={"x-passerelle-feature": "support"})
    assert raw.headers["x-passerelle-route"] == "small; reason=rule"
    assert raw.headers["x-passerelle-target"] == "fake/small-1"
    long = _chat(client, "auto-rules", "word " * 400)
    assert long.headers["x-passerelle-route"] == "medium; reason=rule"
    plain = _chat(client, "auto-rules", "hi")
    assert plain.headers["x-passerelle-route"] == "big; reason=default"
    row = _row(gw, raw)
    assert (row["model"], row["routed_to"], row["route_reason"]) == (
        "auto-rules",
        "small",
        "rule 1",
    )
    # the same usage at big's price, less what small cost: 100x the price, so 99x the cost
    cost = row["cost_pusd"]
    assert cost > 0 and row["route_saved_pusd"] == 99 * cost


def test_a_routed_stream_carries_its_route(client: OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="auto-rules",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers={"x-passerelle-feature": "support"},
    ) as resp:
        assert resp.headers["x-passerelle-route"] == "small; reason=rule"
        text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
    assert text == "Hello from fake upstream."


def test_learned_router_sends_easy_prompts_cheap_and_hard_ones_to_big(
    gw: GatewayProcess, client: OpenAI
) -> None:
    easy = _chat(client, "auto", EASY[0])
    assert easy.headers["x-passerelle-route"].startswith("claude-cheap; reason=learned")
    assert easy.headers["x-passerelle-target"] == "claude/claude-cheap-1"
    hard = _chat(client, "auto", HARD[1])
    assert hard.headers["x-passerelle-route"] == "big; reason=learned"
    assert _row(gw, hard)["route_saved_pusd"] == 0
    assert _row(gw, easy)["route_reason"].startswith("learned q=")


def test_learned_router_sends_an_unfamiliar_prompt_to_the_default(client: OpenAI) -> None:
    raw = _chat(client, "auto", "xylophone quokka zeppelin")
    assert raw.headers["x-passerelle-route"] == "big; reason=default"


def test_learned_router_never_chooses_a_model_the_request_cannot_use(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    raw = _chat(client, "auto", EASY[0], logprobs=True)
    # claude-cheap would be chosen (see above) but gives no logprobs: the next cheapest
    assert raw.headers["x-passerelle-route"].startswith("small; reason=learned")
    assert fresh_upstream.stats()["by_path"] == {"/v1/chat/completions": 1}


def test_rules_never_choose_a_filtered_model_or_an_open_breaker(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    with pytest.raises(APIStatusError):  # opens the dead provider's breaker (one failure)
        _chat(client, "deadcheap", "hi")
    raw = _chat(client, "auto-attack", "hi")  # rule 2 would choose deadcheap: its breaker is open
    assert raw.headers["x-passerelle-route"] == "medium; reason=default"
    assert raw.headers["x-passerelle-target"] == "fake/medium-1"
    fresh_upstream.reset()
    raw = _chat(
        client, "auto-attack", "hi", logprobs=True,
        extra_headers={"x-passerelle-feature": "json"},
    )  # fmt: skip
    # rule 1 would choose claude-cheap, which gives no logprobs
    assert raw.headers["x-passerelle-route"] == "medium; reason=default"
    assert fresh_upstream.stats()["by_path"] == {"/v1/chat/completions": 1}


def test_a_cascade_serves_the_cheap_answer_that_passes(gw: GatewayProcess, client: OpenAI) -> None:
    raw = _chat(client, "auto-cascade", "hi")
    assert raw.headers["x-passerelle-route"] == "small; reason=cascade"
    assert len(gw.ledger_rows("request_id = ?", (raw.headers["x-request-id"],))) == 1


def test_a_cascade_escalates_a_refusal_and_meters_both_calls(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    fresh_upstream.script({"reply": "I'm sorry, I cannot help with that."})
    raw = _chat(client, "auto-cascade", "hi")
    assert raw.headers["x-passerelle-route"] == "big; reason=cascade-escalated"
    assert raw.parse().choices[0].message.content == "Hello from fake upstream."
    rows = gw.ledger_rows("request_id = ?", (raw.headers["x-request-id"],))
    first, served = rows
    assert (first["status"], first["error_code"], first["upstream_model"]) == (
        "attempt_failed", "cascade_check_failed", "small-1",
    )  # fmt: skip
    assert first["output_tokens"] > 0 and first["cost_pusd"] > 0
    assert (served["status"], served["upstream_model"]) == ("ok", "big-1")
    total = (first["cost_pusd"] + served["cost_pusd"]) / 1e12
    assert float(raw.headers["x-passerelle-cost-usd"]) == pytest.approx(total)
    assert fresh_upstream.stats()["requests"] == 2


def _feedback(client: OpenAI, **body: Any) -> Any:
    return client.post("/feedback", body=body, cast_to=object)


def test_feedback_is_recorded_and_trains_a_router_from_the_ledger(
    gw: GatewayProcess, client: OpenAI, tmp_path: Path
) -> None:
    for text, score in [(EASY[1], 1.0), (HARD[2], 0.0), (EASY[2], 1.0)]:
        raw = _chat(client, "auto", text)
        answer = _feedback(client, request_id=raw.headers["x-request-id"], score=score, label="ok")
        assert answer["object"] == "feedback" and answer["score"] == score
        assert answer["model"] == raw.headers["x-passerelle-route"].split(";")[0]
    out = tmp_path / "from-ledger.npz"
    done = gw.cli("router", "train", "--from-ledger", "--quiet", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "trained on 3 prompts" in done.stdout and out.stat().st_size > 0


def test_feedback_errors_are_openai_shaped(gw: GatewayProcess, client: OpenAI) -> None:
    with pytest.raises(NotFoundError) as unknown:
        _feedback(client, request_id="req_nope", score=1)
    assert unknown.value.code == "request_not_found"
    served = _chat(client, "auto-rules", "hi").headers["x-request-id"]
    with pytest.raises(BadRequestError) as bad:
        _feedback(client, request_id=served, score=1.5)
    assert (bad.value.code, bad.value.param) == ("invalid_score", "score")
    with pytest.raises(BadRequestError):
        _feedback(client, request_id=served, score=True)
    other = OpenAI(base_url=gw.base_url, api_key=TENANT_KEYS["globex"], max_retries=0)
    with other, pytest.raises(NotFoundError) as foreign:
        _feedback(other, request_id=served, score=1)
    assert foreign.value.code == "request_not_found"
