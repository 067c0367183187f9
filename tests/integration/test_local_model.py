"""The embedded llama.cpp model behind a real ``passerelle serve``, driven with the openai SDK.

One gateway serves both the fake upstream (model ``gpt-4o-mini``) and the shipped Gemma 3 270M
(model ``local``, provider ``on-prem``, at most 2 requests waiting); a second one is the true
embedded default, started with no configuration in an empty folder.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from openai import InternalServerError, OpenAI

from tests.fakes.gateway import ADMIN_TOKEN, TENANT_KEYS, GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

pytestmark = pytest.mark.local_model

MAX_QUEUE = 2
# greedy, the model counts "1, 2, 3, ..." on one line: none of the framing's stops comes, and the
# answer runs to max_tokens
LONG = [{"role": "user", "content": "Write the numbers from 1 to 200 separated by commas."}]
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def local_config(upstream_url: str) -> dict[str, Any]:
    config = fake_upstream_config(upstream_url)
    config["providers"].append(
        {
            "name": "on-prem",
            "kind": "local",
            "model": "gemma-3-270m",
            "max_queue": MAX_QUEUE,
            "jurisdiction": "self-hosted",
            # a full queue is not a broken engine: keep the breaker out of the burst test
            "breaker_failures": 50,
        }
    )
    config["models"].append(
        {
            "name": "local",
            "targets": [
                {
                    "provider": "on-prem",
                    "upstream_model": "gemma-3-270m",
                    "price": {"input": 0.0, "output": 0.0},
                }
            ],
        }
    )
    return config


@pytest.fixture(scope="module")
def local_gateway(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("local"), local_config(upstream.url)) as gw:
        yield gw


def client_for(gateway: GatewayProcess, key: str = TENANT_KEYS["acme"]) -> OpenAI:
    return OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=60)


def usage_rows(gateway: GatewayProcess) -> list[dict[str, Any]]:
    req = urllib.request.Request(
        f"{gateway.url}/admin/usage?group_by=tenant,feature,model",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["data"]


def test_the_embedded_model_answers_a_factual_question(local_gateway: GatewayProcess) -> None:
    with client_for(local_gateway) as client:
        answer = client.chat.completions.create(
            model="local", messages=FRANCE, temperature=0, max_tokens=24
        )
    assert "Paris" in answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0


# the framing once showed one worked example, the capital of Italy, and the model answered "hi"
# and "Count to five." with "The capital of Italy is Rome."
ITALY = re.compile(r"\b(italy|italian|rome)\b", re.IGNORECASE)
# the worked examples it shows now (providers/local_framing.py EXAMPLES)
EXAMPLES = re.compile(r"\b(evening|neil|armstrong|moon)\b", re.IGNORECASE)
UNLIKE_A_QUESTION = ["hi", "Count to five."]


def ask_local(gateway: GatewayProcess, prompt: str, **params: Any) -> str:
    with client_for(gateway) as client:
        answer = client.chat.completions.create(
            model="local", messages=[{"role": "user", "content": prompt}], max_tokens=32, **params
        )
    return answer.choices[0].message.content or ""


@pytest.mark.parametrize("prompt", UNLIKE_A_QUESTION)
def test_a_greedy_answer_repeats_no_worked_example(
    local_gateway: GatewayProcess, prompt: str
) -> None:
    text = ask_local(local_gateway, prompt, temperature=0)
    assert text and not ITALY.search(text) and not EXAMPLES.search(text), text


def test_sampled_answers_never_bring_up_italy(local_gateway: GatewayProcess) -> None:
    answers = [
        ask_local(local_gateway, prompt, temperature=0.7, seed=seed)
        for prompt in UNLIKE_A_QUESTION
        for seed in range(1, 5)
    ]
    assert all(answers)
    assert not [a for a in answers if ITALY.search(a)], answers


def test_a_stream_with_usage_is_metered_in_the_ledger(local_gateway: GatewayProcess) -> None:
    with client_for(local_gateway) as client:
        chunks = list(
            client.chat.completions.create(
                model="local",
                messages=FRANCE,
                temperature=0,
                max_tokens=24,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"X-Passerelle-Feature": "local-stream"},
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    [row] = [r for r in usage_rows(local_gateway) if r["feature"] == "local-stream"]
    assert (row["model"], row["requests"], row["errors"]) == ("local", 1, 0)
    assert (row["input_tokens"], row["output_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )


def test_other_models_stay_fast_while_the_engine_is_busy(local_gateway: GatewayProcess) -> None:
    def generate() -> float:
        start = time.perf_counter()
        with client_for(local_gateway) as client:
            answer = client.chat.completions.create(
                model="local", messages=LONG, temperature=0, max_tokens=200
            )
        assert answer.usage.completion_tokens > 100
        return time.perf_counter() - start

    latencies: list[float] = []
    with ThreadPoolExecutor(2) as pool, client_for(local_gateway) as fast:
        local_runs = [pool.submit(generate) for _ in range(2)]
        time.sleep(0.3)  # the engine is at work
        while not all(run.done() for run in local_runs) and len(latencies) < 40:
            start = time.perf_counter()
            answer = fast.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            latencies.append(time.perf_counter() - start)
            assert answer.choices[0].message.content == "Hello from fake upstream."
            time.sleep(0.05)
        durations = [run.result() for run in local_runs]
    assert min(durations) > 1.0  # the engine really was busy for seconds
    assert len(latencies) >= 10
    assert statistics.median(latencies) < 0.1, latencies


def test_a_burst_past_the_queue_gets_clear_503s(local_gateway: GatewayProcess) -> None:
    barrier = threading.Barrier(6)

    def ask() -> str:
        with client_for(local_gateway) as client:
            barrier.wait()
            try:
                client.chat.completions.create(
                    model="local", messages=LONG, temperature=0, max_tokens=40
                )
            except InternalServerError as exc:
                assert exc.status_code == 503
                assert exc.code == "model_overloaded"
                return "overloaded"
        return "ok"

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda _: ask(), range(6)))
    # one generating and MAX_QUEUE waiting get through; the rest are told at once
    assert 1 <= outcomes.count("ok") <= MAX_QUEUE + 1, outcomes
    assert outcomes.count("overloaded") >= 1, outcomes
    with client_for(local_gateway) as client:  # and the queue has room again
        client.chat.completions.create(model="local", messages=FRANCE, max_tokens=4)


def test_serve_with_no_config_is_the_embedded_default(tmp_path: Path) -> None:
    workdir = tmp_path / "empty"
    with GatewayProcess(workdir, None) as gw:
        banner = "\n".join(gw.banner)
        assert f"serving the OpenAI API at {gw.base_url}" in banner
        [key] = [line.rsplit(" ", 1)[1] for line in gw.banner if "your API key" in line]
        with client_for(gw, key) as client:
            answer = client.chat.completions.create(
                model="local", messages=FRANCE, temperature=0, max_tokens=24
            )
    assert "Paris" in answer.choices[0].message.content
    assert (workdir / "passerelle-data" / "ledger.db").is_file()
