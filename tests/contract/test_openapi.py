"""The OpenAPI description is the API: every served route in it, no other, served to anyone."""

from __future__ import annotations

import json
import urllib.request

import schemathesis

from passerelle.config.load import load_config_text
from passerelle.gateway import Gateway
from passerelle.server.app import create_app
from passerelle.server.openapi import openapi_document
from tests.contract.test_route_roles import ROUTES
from tests.fakes.gateway import ADMIN_TOKEN, TENANT_KEYS, GatewayProcess


def test_the_description_lists_exactly_the_served_routes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    loaded = load_config_text(f"store: sqlite:///{tmp_path}/ledger.db\n")
    app = create_app(Gateway.from_config(loaded))
    served = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    described = {
        (method.upper(), path)
        for path, item in openapi_document()["paths"].items()
        for method in item
    }
    assert described == served


def test_each_operation_declares_the_role_the_route_admits() -> None:
    scheme = {"tenant": [{"tenantKey": []}], "admin": [{"adminToken": []}], "anyone": []}
    for path, item in openapi_document()["paths"].items():
        for method, op in item.items():
            assert op["security"] == scheme[ROUTES[(method.upper(), path)]], (method, path)


def test_it_is_served_to_anyone_and_names_no_secret(gateway: GatewayProcess) -> None:
    with urllib.request.urlopen(gateway.url + "/openapi.json", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        text = resp.read().decode()
    assert json.loads(text) == openapi_document()
    for secret in (ADMIN_TOKEN, *TENANT_KEYS.values(), *TENANT_KEYS, "gpt-4o-mini"):
        assert secret not in text  # no key, no tenant, no model of this deployment


def test_schemathesis_reads_every_operation() -> None:
    schema = schemathesis.openapi.from_dict(openapi_document())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(ROUTES)
