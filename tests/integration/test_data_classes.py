"""Data classes through a real gateway: a call reaches only the providers its class allows.

The fake upstream stands for two providers, ``us`` (jurisdiction US) and ``eu`` (EU), told apart
by the upstream model each is asked for (the fake counts requests per model). The policy:
``internal`` goes anywhere, ``confidential`` only to the EU or self-hosted, ``secret`` only
self-hosted. Each test is a client trying to get its data somewhere the policy forbids: by
naming a lower class than its tenant's, by a route whose first target is in the US, by the
EU target failing (no fallback to the US), by a margin floor degrading it to a US-only model,
and for embeddings too. Nothing is ever sent to an excluded provider; a call left with none is
a 403 naming the class and what it allows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.fakes.gateway import GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

HI = [{"role": "user", "content": "hi #usage:1000,2000,0"}]  # $0.30 on premium: past its floor
CONFIDENTIAL = {"X-Passerelle-Data-Class": "confidential"}


def target(provider: str, model: str, usd: float = 1) -> dict[str, Any]:
    return {"provider": provider, "upstream_model": model, "price": {"input": usd, "output": usd}}


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, str]]:
    config = fake_upstream_config(upstream.url)
    fake = {**config["providers"][0], "max_retries": 1}
    config["providers"] = [
        {**fake, "name": "us", "jurisdiction": "US"},
        {**fake, "name": "eu", "jurisdiction": "EU"},
    ]
    config["models"] = [
        {"name": "mixed", "targets": [target("us", "us-1"), target("eu", "eu-1")]},
        {"name": "us-only", "targets": [target("us", "us-2")]},
        {"name": "embed", "targets": [target("us", "us-embed"), target("eu", "eu-embed")]},
        {"name": "premium", "degrade_to": "us-only", "targets": [target("eu", "eu-prem", 100)]},
    ]
    config["sovereignty"] = {
        "default_class": "internal",
        "classes": {
            "internal": {"allow": ["any"], "personal_data": "pseudonymise"},
            "confidential": {"allow": ["self-hosted", "EU"], "personal_data": "allow"},
            "secret": {"allow": ["self-hosted"]},
        },
        "features": {"hr": "secret"},
    }
    config["plans"] = [
        {
            "name": "pro",
            "monthly_usd": 1,
            "margin_floor": {"max_cost_share": 0.2, "action": "degrade"},
        }
    ]
    bank_key = "sk-bank-" + uuid.uuid4().hex
    config["tenants"].append(
        {"name": "bank", "plan": "pro", "data_class": "confidential", "keys": ["env:BANK_KEY"]}
    )
    with GatewayProcess(
        tmp_path_factory.mktemp("classes"), config, env={"BANK_KEY": bank_key}
    ) as g:
        yield g, bank_key


@pytest.fixture
def client(gw: tuple[GatewayProcess, str], sdk: Sdk) -> OpenAI:
    return sdk(gw[0])


@pytest.fixture
def bank(gw: tuple[GatewayProcess, str]) -> Iterator[OpenAI]:
    with OpenAI(base_url=gw[0].base_url, api_key=gw[1], max_retries=0) as c:
        yield c


def models_asked(upstream: UpstreamProcess) -> dict[str, int]:
    return upstream.stats()["models"]


def test_without_a_class_the_default_goes_anywhere(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="mixed", messages=HI)
    assert raw.headers["x-passerelle-data-class"] == "internal"
    assert raw.headers["x-passerelle-target"] == "us/us-1"


def test_a_confidential_call_skips_the_us_target_in_front(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="mixed", messages=HI, extra_headers=CONFIDENTIAL
    )
    assert raw.headers["x-passerelle-target"] == "eu/eu-1"
    assert raw.headers["x-passerelle-data-class"] == "confidential"
    assert models_asked(fresh_upstream) == {"eu-1": 1}


def test_no_allowed_target_is_a_403_naming_the_class_and_the_policy(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="us-only", messages=HI, extra_headers=CONFIDENTIAL)
    message = refused.value.message
    assert "data class 'confidential' allows only EU, self-hosted" in message
    assert "removed us/us-2" in message and "model 'us-only'" in message
    assert fresh_upstream.stats()["requests"] == 0


def test_a_failing_eu_target_does_not_fall_back_to_the_us(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    fresh_upstream.script({"status": 500}, {"status": 500})  # the EU target and its retry
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="mixed", messages=HI, extra_headers=CONFIDENTIAL)
    assert models_asked(fresh_upstream) == {"eu-1": 2}


def test_a_client_cannot_lower_its_tenants_class(
    fresh_upstream: UpstreamProcess, bank: OpenAI
) -> None:
    raw = bank.chat.completions.with_raw_response.create(
        model="mixed", messages=HI, extra_headers={"X-Passerelle-Data-Class": "internal"}
    )
    assert raw.headers["x-passerelle-data-class"] == "confidential"
    assert models_asked(fresh_upstream) == {"eu-1": 1}


def test_a_features_class_is_a_floor_too(fresh_upstream: UpstreamProcess, client: OpenAI) -> None:
    with pytest.raises(openai.PermissionDeniedError, match="data class 'secret'"):
        client.chat.completions.create(
            model="mixed", messages=HI, extra_headers={"X-Passerelle-Feature": "hr"}
        )
    assert fresh_upstream.stats()["requests"] == 0


def test_an_unknown_class_is_a_400(fresh_upstream: UpstreamProcess, client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="mixed", messages=HI, extra_headers={"X-Passerelle-Data-Class": "publik"}
        )
    assert refused.value.code == "invalid_data_class"
    assert "internal, confidential, secret" in refused.value.message


def test_embeddings_keep_to_the_class(fresh_upstream: UpstreamProcess, client: OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(
        model="embed", input="a confidential note", extra_headers=CONFIDENTIAL
    )
    assert raw.headers["x-passerelle-target"] == "eu/eu-embed"
    assert models_asked(fresh_upstream) == {"eu-embed": 1}


def test_a_degraded_call_keeps_its_class(fresh_upstream: UpstreamProcess, bank: OpenAI) -> None:
    first = bank.chat.completions.with_raw_response.create(model="premium", messages=HI)
    assert first.headers["x-passerelle-target"] == "eu/eu-prem"
    # past the margin floor: degraded to a US-only model, which its class cannot reach
    with pytest.raises(openai.PermissionDeniedError, match="data class 'confidential'"):
        bank.chat.completions.create(model="premium", messages=HI)
    assert models_asked(fresh_upstream) == {"eu-prem": 1}
