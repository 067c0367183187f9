"""Tenants exist on purpose: a key for a misspelt tenant is refused, scopes cannot collide.

A typo in ``POST /admin/keys`` (``t1-typo``) used to make a tenant with no budget and no limit; a
tenant named ``acme:x`` replayed ``acme``'s idempotent answers. Keys are now only for declared
tenants or for one created explicitly (``create_tenant`` / ``--create-tenant``), tenant names are
validated, the idempotency scope is unambiguous, and the text fields the gateway stores are
bounded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from passerelle.pipeline.context import Call
from passerelle.pipeline.idempotency import Idempotency, idempotency_scope
from passerelle.providers.base import Completion, Usage
from passerelle.store.idempotency import LocalIdempotency
from passerelle.tenancy import ApiKey
from tests.contract.test_error_shape import MESSAGES, MODEL, assert_error, http
from tests.fakes.gateway import ADMIN_TOKEN, GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with GatewayProcess(
        tmp_path_factory.mktemp("tenants"), fake_upstream_config(upstream.url)
    ) as g:
        yield g


def create_key(gw: GatewayProcess, **body: Any) -> Any:
    return http(gw.url + "/admin/keys", body, key=ADMIN_TOKEN)


def test_a_key_for_an_undeclared_tenant_is_refused(gw) -> None:  # type: ignore[no-untyped-def]
    raw = create_key(gw, tenant="acme-typo")
    err = assert_error(raw, 400, code="unknown_tenant", param="tenant")
    assert "acme" in err["message"] and "create_tenant" in err["message"]
    listed = http(gw.url + "/admin/keys?tenant=acme-typo", method="GET", key=ADMIN_TOKEN).json()
    assert listed["data"] == []


def test_a_declared_tenant_gets_its_key(gw) -> None:  # type: ignore[no-untyped-def]
    raw = create_key(gw, tenant="acme", name="ci")
    assert raw.status == 201, raw.body
    assert raw.json()["tenant"] == "acme"


def test_an_explicitly_created_tenant_is_told_it_has_no_budgets(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    raw = create_key(gw, tenant="initech", create_tenant=True)
    assert raw.status == 201, raw.body
    doc = raw.json()
    assert doc["tenant_created"] is True
    assert "no budgets" in doc["warning"]
    # the tenant now exists (it has a key): a second key needs no flag
    again = create_key(gw, tenant="initech")
    assert again.status == 201, again.body
    assert again.json()["tenant_created"] is False
    served = http(
        gw.base_url + "/chat/completions", {"model": MODEL, "messages": MESSAGES}, key=doc["key"]
    )
    assert served.status == 200, served.body


@pytest.mark.parametrize(
    "tenant",
    ["acme:x", "a b", "", "x" * 65, "-lead", "tab\tin", "nul\x00", "ünïcode"],
    ids=["colon", "space", "empty", "too_long", "leading_dash", "tab", "nul", "non_ascii"],
)
def test_a_tenant_name_is_validated_even_when_created(gw, tenant) -> None:  # type: ignore[no-untyped-def]
    raw = create_key(gw, tenant=tenant, create_tenant=True)
    assert_error(raw, 400, param="tenant")


def test_create_tenant_must_be_a_boolean(gw) -> None:  # type: ignore[no-untyped-def]
    raw = create_key(gw, tenant="hooli", create_tenant="yes")
    assert_error(raw, 400, param="create_tenant", code="invalid_type")


def test_a_key_name_is_bounded(gw) -> None:  # type: ignore[no-untyped-def]
    raw = create_key(gw, tenant="acme", name="n" * 10_000)
    assert_error(raw, 400, param="name", code="string_above_max_length")


def test_cli_refuses_an_undeclared_tenant_and_names_the_flag(gw) -> None:  # type: ignore[no-untyped-def]
    out = gw.cli("keys", "create", "--tenant", "umbrella")
    assert out.returncode == 2 and out.stdout == ""
    assert "unknown tenant 'umbrella'" in out.stderr and "--create-tenant" in out.stderr
    made = gw.cli("keys", "create", "--tenant", "umbrella", "--create-tenant")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("sk-")
    assert "no budgets" in made.stderr
    bad = gw.cli("keys", "create", "--tenant", "umbrella:x", "--create-tenant")
    assert bad.returncode == 2 and "tenant" in bad.stderr


# -- idempotency scopes ----------------------------------------------------------------------


def test_scopes_of_different_tenants_never_collide() -> None:
    pairs = [("acme:x", "k9"), ("acme", "x:k9"), ("acme", "x"), ("acmex", ""), ("a", "cme:x:k9")]
    scopes = {idempotency_scope(t, k) for t, k in pairs}
    assert len(scopes) == len(pairs)


async def test_a_colon_in_a_tenant_name_cannot_replay_another_tenants_answer() -> None:
    stage = Idempotency(LocalIdempotency())
    body = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()

    def call(tenant: str, key: str) -> Call:
        c = Call(endpoint="chat.completions", headers={"Idempotency-Key": key}, raw_body=body)
        c.key = ApiKey(key_id=f"key_{tenant}", tenant=tenant, digest="d" * 64)
        return c

    async def answer(c: Call) -> None:
        c.status = "ok"
        c.result = Completion(
            body=f'{{"for": "{c.tenant}"}}'.encode(), usage=Usage(), upstream_model="m"
        )

    first = call("acme", "x:k9")
    await stage(first, answer)
    await first.finish()
    second = call("acme:x", "k9")
    await stage(second, answer)
    await second.finish()
    assert second.status != "replayed"
    assert isinstance(second.result, Completion) and b"acme:x" in second.result.body


# -- text fields the gateway stores ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param", "code"),
    [
        ("/chat/completions", {"user": "u" * 3_000_000}, "user", "string_above_max_length"),
        ("/chat/completions", {"user": "bob\x00evil"}, "user", "invalid_value"),
        ("/embeddings", {"user": "u" * 300}, "user", "string_above_max_length"),
        ("/chat/completions", {"model": "m" * 300}, "model", "string_above_max_length"),
        ("/chat/completions", {"model": "gpt\x00-4o-mini"}, "model", "invalid_value"),
        ("/chat/completions", {"metadata": {"feature": "f\n"}}, "feature", "invalid_value"),
    ],
    ids=["user_3mb", "user_nul", "embeddings_user", "model_long", "model_nul", "feature_newline"],
)
def test_stored_text_fields_are_bounded(gw, fresh_upstream, path, body, param, code) -> None:  # type: ignore[no-untyped-def]
    base = (
        {"model": MODEL, "messages": MESSAGES}
        if path == "/chat/completions"
        else {"model": "fake-embed", "input": "hi"}
    )
    raw = http(gw.base_url + path, {**base, **body})
    assert_error(raw, 400, param=param, code=code)
    assert fresh_upstream.stats()["requests"] == 0


def test_a_user_at_the_limit_is_served(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    raw = http(
        gw.base_url + "/chat/completions", {"model": MODEL, "messages": MESSAGES, "user": "u" * 256}
    )
    assert raw.status == 200, raw.body
