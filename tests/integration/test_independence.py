"""The independence report and the exit drill, from a real gateway's ledger and configuration.

The fake upstream stands for three providers told apart by the upstream model each is asked
for: ``us`` (US), ``eu`` (EU) and ``onprem`` (self-hosted). Known traffic is sent through the
gateway (``TRAFFIC``: which model, tenant, feature and usage); the expected shares, spend and
Herfindahl-Hirschman indexes are computed here from those calls and the configured prices, and
the report (``GET /admin/independence``, ``passerelle independence``) must say the same. The
ledger is SQLite, then PostgreSQL (where it runs): the report reads the ledger's own query on
both. Each run reads only its own calls, by the period filter (``since`` = its start).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any
from urllib.parse import quote

import openai
import pytest
from openai import OpenAI

from tests.fakes.gateway import ADMIN_TOKEN, TENANT_KEYS, GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

JURISDICTION = {"us": "US", "eu": "EU", "onprem": "self-hosted"}
PRICE = {"us-chat": 1, "us-solo": 3, "eu-chat": 2, "eu-only": 2, "onprem-1": 0.5, "us-sov": 1}
MODELS = {  # model -> its targets (provider, upstream model), in order
    "chat": [("us", "us-chat"), ("eu", "eu-chat")],
    "us-only": [("us", "us-solo")],
    "sovereign": [("onprem", "onprem-1"), ("us", "us-sov")],
    "eu-chat": [("eu", "eu-only"), ("onprem", "onprem-1")],
}
CONFIDENTIAL = {"X-Passerelle-Data-Class": "confidential"}


@dataclass(frozen=True)
class Sent:
    tenant: str
    feature: str | None
    model: str
    prompt: int
    completion: int
    times: int
    data_class: str | None = None


TRAFFIC = [
    Sent("acme", "support", "chat", 1000, 2000, 3),
    Sent("acme", "support", "us-only", 500, 500, 2),
    Sent("globex", "search", "eu-chat", 1000, 1000, 1),
    Sent("globex", "search", "sovereign", 100, 100, 2),
    Sent("acme", None, "sovereign", 300, 100, 1, "confidential"),
]
REFUSED = Sent("acme", None, "us-only", 10, 10, 1, "confidential")  # 403: no provider sees it


def target(provider: str, upstream: str) -> dict[str, Any]:
    usd = PRICE[upstream]
    return {
        "provider": provider,
        "upstream_model": upstream,
        "price": {"input": usd, "output": usd},
    }


def config(upstream_url: str, **overrides: Any) -> dict[str, Any]:
    base = fake_upstream_config(upstream_url, **overrides)
    fake = {**base["providers"][0], "max_retries": 0}
    base["providers"] = [{**fake, "name": n, "jurisdiction": j} for n, j in JURISDICTION.items()]
    base["models"] = [
        {"name": m, "targets": [target(p, u) for p, u in ts]} for m, ts in MODELS.items()
    ]
    base["sovereignty"] = {
        "default_class": "internal",
        "classes": {
            "internal": {"allow": ["any"]},
            "confidential": {"allow": ["self-hosted", "EU"]},
            "secret": {"allow": ["self-hosted"]},
        },
    }
    return base


def answered_by(sent: Sent, data_class: str | None = None) -> tuple[str, str] | None:
    """The target that answers a call: the first its class admits (nothing fails here)."""
    allowed = {"confidential": {"EU", "self-hosted"}}.get(data_class or "")
    for provider, upstream in MODELS[sent.model]:
        if allowed is None or JURISDICTION[provider] in allowed:
            return provider, upstream
    return None


def send(gw: GatewayProcess, sent: Sent) -> None:
    with OpenAI(base_url=gw.base_url, api_key=TENANT_KEYS[sent.tenant], max_retries=0) as c:
        headers = {**({"X-Passerelle-Feature": sent.feature} if sent.feature else {})}
        if sent.data_class:
            headers["X-Passerelle-Data-Class"] = sent.data_class
        content = f"hello #usage:{sent.prompt},{sent.completion},0"
        for _ in range(sent.times):
            try:
                c.chat.completions.create(
                    model=sent.model,
                    messages=[{"role": "user", "content": content}],
                    extra_headers=headers,
                )
            except openai.PermissionDeniedError:
                assert answered_by(sent, sent.data_class) is None


def admin(gw: GatewayProcess, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        gw.url + path,
        data=data,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(
    request: pytest.FixtureRequest, upstream: UpstreamProcess, tmp_path_factory: Any
) -> Iterator[tuple[GatewayProcess, str]]:
    extra = (
        {"store": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    )
    with GatewayProcess(
        tmp_path_factory.mktemp("independence"), config(upstream.url, **extra)
    ) as g:
        since = datetime.now(UTC).isoformat()
        for sent in [*TRAFFIC, REFUSED]:
            send(g, sent)
        yield g, since


@dataclass
class Expected:
    requests: dict[str, int]
    tokens: dict[str, int]
    spend: dict[str, Fraction]


def expected(calls: list[Sent], key: str = "provider") -> Expected:
    """Requests, tokens and spend per provider (or jurisdiction) of the calls answered."""
    out = Expected({}, {}, {})
    for s in calls:
        got = answered_by(s, s.data_class)
        if got is None:
            continue
        provider, upstream = got
        name = provider if key == "provider" else JURISDICTION[provider]
        usd = Fraction(str(PRICE[upstream]))
        out.requests[name] = out.requests.get(name, 0) + s.times
        out.tokens[name] = out.tokens.get(name, 0) + s.times * (s.prompt + s.completion)
        cost = s.times * usd * (s.prompt + s.completion) / 1_000_000
        out.spend[name] = out.spend.get(name, Fraction(0)) + cost
    return out


def hhi(amounts: list[int] | list[Fraction]) -> int:
    total = sum(amounts, Fraction(0))
    return round(sum((100 * Fraction(a) / total) ** 2 for a in amounts))


def check_shares(part: dict[str, Any], calls: list[Sent]) -> None:
    for key, listed in (("provider", part["providers"]), ("jurisdiction", part["jurisdictions"])):
        want = expected(calls, key)
        got = {s["name"]: s for s in listed}
        assert set(got) == set(want.requests)
        total_req, total_tok = sum(want.requests.values()), sum(want.tokens.values())
        total_usd = sum(want.spend.values(), Fraction(0))
        for name, s in got.items():
            assert s["requests"] == want.requests[name]
            assert s["requests_share"] == pytest.approx(want.requests[name] / total_req)
            assert s["tokens"] == want.tokens[name]
            assert s["tokens_share"] == pytest.approx(want.tokens[name] / total_tok)
            assert Fraction(s["cost_usd"]) == want.spend[name]
            assert s["spend_share"] == pytest.approx(float(want.spend[name] / total_usd))
            if key == "provider":
                assert s["jurisdiction"] == JURISDICTION[name]
        conc = part["concentration"][key]
        assert conc["requests_hhi"] == hhi(list(want.requests.values()))
        assert conc["spend_hhi"] == hhi(list(want.spend.values()))


def test_shares_and_concentration_are_those_of_the_calls_sent(
    gw: tuple[GatewayProcess, str],
) -> None:
    g, since = gw
    report = admin(g, f"/admin/independence?since={quote(since)}")
    assert report["object"] == "independence" and "0 to 10000" in report["hhi_scale"]
    check_shares(report, TRAFFIC)
    assert report["totals"]["not_sent"] == REFUSED.times
    assert report["totals"]["requests"] == sum(s.times for s in TRAFFIC)
    features = {f["feature"]: f for f in report["features"]}
    assert set(features) == {"support", "search", None}
    for feature, part in features.items():
        check_shares(part, [s for s in TRAFFIC if s.feature == feature])
    # support went to the US alone: one provider holds everything
    support = features["support"]["concentration"]["provider"]
    assert support["requests_hhi"] == 10000 and support["spend_reading"] == "highly concentrated"


def test_the_period_filter_leaves_out_what_came_before(gw: tuple[GatewayProcess, str]) -> None:
    g, _ = gw
    later = quote(datetime.now(UTC).isoformat())
    report = admin(g, f"/admin/independence?since={later}")
    assert report["providers"] == [] and report["totals"]["requests"] == 0
    assert report["concentration"]["provider"]["spend_hhi"] is None


def test_a_fallback_outside_each_provider_and_the_classes_it_leaves_without_one(
    gw: tuple[GatewayProcess, str],
) -> None:
    report = admin(gw[0], "/admin/independence")
    fb = {m["model"]: {w["provider"]: w for w in m["without"]} for m in report["fallbacks"]}
    assert fb["us-only"]["us"]["fallback"] is False and fb["us-only"]["us"]["to"] == []
    assert fb["chat"]["us"] == {
        "provider": "us",
        "fallback": True,
        "to": ["eu"],
        "classes_without_fallback": [],
    }
    # confidential calls of `chat` can only reach eu: without it, they have nowhere to go
    assert fb["chat"]["eu"]["classes_without_fallback"] == ["confidential"]
    assert fb["sovereign"]["onprem"]["to"] == ["us"]
    assert fb["sovereign"]["onprem"]["classes_without_fallback"] == ["confidential", "secret"]
    assert fb["eu-chat"]["eu"]["classes_without_fallback"] == []
    unserved = {m["model"]: m["classes_unserved"] for m in report["fallbacks"]}
    assert unserved["us-only"] == ["confidential", "secret"]


def test_the_command_prints_the_report_and_its_json_is_the_apis(
    gw: tuple[GatewayProcess, str],
) -> None:
    g, since = gw
    table = g.cli("independence", "--since", since)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    us = next(line.split() for line in lines if line.startswith("us "))
    assert us[:3] == ["us", "US", str(expected(TRAFFIC).requests["us"])]
    assert any(line.startswith("TOTAL") for line in lines)
    assert (
        "highly concentrated" in table.stdout and "Fallback outside each provider" in table.stdout
    )
    as_json = g.cli("independence", "--since", since, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == admin(g, f"/admin/independence?since={quote(since)}")


def test_the_drill_names_what_breaks_and_what_moves(gw: tuple[GatewayProcess, str]) -> None:
    g, since = gw
    report = admin(g, "/admin/drill", {"without": "us", "since": since})
    assert report["broken_models"] == ["us-only"] and report["live"] is None
    effects = {m["model"]: m for m in report["models"]}
    assert effects["chat"]["effect"] == "moves" and effects["chat"]["to"] == "eu/eu-chat"
    assert effects["chat"]["price_change"] == {  # eu-chat costs $1 more per Mtok, both ways
        "input_per_mtok_usd": "1.000000000000",
        "output_per_mtok_usd": "1.000000000000",
    }
    assert effects["sovereign"]["effect"] == "loses_fallback"
    assert "eu-chat" not in effects and report["classes_stranded"] == []
    features = {f["feature"]: f for f in report["features"]}
    support = [s for s in TRAFFIC if s.feature == "support"]
    broken = [s for s in support if s.model == "us-only"]
    assert features["support"]["requests"] == sum(s.times for s in support)
    assert features["support"]["broken_requests"] == sum(s.times for s in broken)
    spend = expected(support).spend
    broken_spend = expected(broken).spend["us"]
    assert features["support"]["broken_spend_share"] == pytest.approx(
        float(broken_spend / sum(spend.values(), Fraction(0)))
    )
    assert features["support"]["provider_requests_share"] == 1.0
    assert "search" not in features  # it never called the US, nor a model that breaks
    tenants = {t["tenant"]: t for t in report["tenants"]}
    assert set(tenants) == {"acme"}
    assert tenants["acme"]["broken_requests"] == 2 + REFUSED.times  # the refusal asked for it


def test_the_drill_without_the_self_hosted_provider_strands_the_secret_class(
    gw: tuple[GatewayProcess, str],
) -> None:
    report = admin(gw[0], "/admin/drill", {"without": "onprem"})
    assert report["classes_stranded"] == ["secret"]
    sovereign = next(m for m in report["models"] if m["model"] == "sovereign")
    assert sovereign["effect"] == "moves" and sovereign["classes_stranded"] == [
        "confidential",
        "secret",
    ]


def test_an_unknown_provider_lists_the_known_ones(gw: tuple[GatewayProcess, str]) -> None:
    g, _ = gw
    out = g.cli("drill", "--without", "nope")
    assert out.returncode == 2
    assert "unknown provider 'nope'" in out.stderr and "eu, onprem, us" in out.stderr
    with pytest.raises(urllib.error.HTTPError) as refused:
        admin(g, "/admin/drill", {"without": "nope"})
    assert refused.value.code == 400
    error = json.loads(refused.value.read())["error"]
    refused.value.close()
    assert error["code"] == "unknown_provider" and error["param"] == "without"
    assert "eu, onprem, us" in error["message"]


def test_the_admin_routes_need_the_admin_token(gw: tuple[GatewayProcess, str]) -> None:
    g, _ = gw
    for path, data in (("/admin/independence", None), ("/admin/drill", b'{"without": "us"}')):
        req = urllib.request.Request(
            g.url + path, data=data, headers={"Authorization": f"Bearer {TENANT_KEYS['acme']}"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 403
        assert json.loads(refused.value.read())["error"]["type"] == "permission_error"
        refused.value.close()


def test_the_drill_command_prints_a_table(gw: tuple[GatewayProcess, str]) -> None:
    out = gw[0].cli("drill", "--without", "us")
    assert out.returncode == 0, out.stderr
    assert "Models with no target left: us-only" in out.stdout
    row = next(line.split() for line in out.stdout.splitlines() if line.startswith("chat "))
    assert row[:3] == ["chat", "moves", "eu/eu-chat"]
    as_json = json.loads(gw[0].cli("drill", "--without", "us", "--format", "json").stdout)
    assert as_json["broken_models"] == ["us-only"]
