"""Every route declares who may call it, and a test walks every route with every role.

The table below is the declaration; the first test fails when the server gains a route the table
does not list, the second sends each route a request as nobody, as a tenant and as the admin.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from passerelle.config.load import load_config_text
from passerelle.gateway import Gateway
from passerelle.server.app import create_app
from tests.fakes.gateway import ADMIN_TOKEN, TENANT_KEYS, GatewayProcess

# (method, path) -> who may call it: "anyone", "tenant" or "admin"
ROUTES = {
    ("POST", "/v1/chat/completions"): "tenant",
    ("POST", "/v1/completions"): "tenant",
    ("POST", "/v1/embeddings"): "tenant",
    ("POST", "/v1/messages"): "tenant",
    ("POST", "/v1/messages/count_tokens"): "tenant",
    ("GET", "/v1/models"): "tenant",
    ("GET", "/v1/models/{model}"): "tenant",
    ("POST", "/v1/responses"): "tenant",
    ("POST", "/v1/feedback"): "tenant",
    ("GET", "/v1/responses/{response_id}"): "tenant",
    ("GET", "/health"): "anyone",
    ("GET", "/openapi.json"): "anyone",
    ("GET", "/admin/usage"): "admin",
    ("GET", "/admin/savings"): "admin",
    ("GET", "/admin/independence"): "admin",
    ("POST", "/admin/drill"): "admin",
    ("GET", "/admin/margins"): "admin",
    ("GET", "/admin/revenue"): "admin",
    ("POST", "/admin/revenue"): "admin",
    ("GET", "/admin/keys"): "admin",
    ("POST", "/admin/keys"): "admin",
}
ROLES = {"nobody": None, "tenant": TENANT_KEYS["acme"], "admin": ADMIN_TOKEN}


def test_every_route_of_the_server_is_declared(tmp_path) -> None:  # type: ignore[no-untyped-def]
    loaded = load_config_text(f"store: sqlite:///{tmp_path}/ledger.db\n")
    app = create_app(Gateway.from_config(loaded))
    served = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    assert served == set(ROUTES)


def status_of(gateway: GatewayProcess, method: str, path: str, token: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = b"{}" if method == "POST" else None
    path = re.sub(r"\{[^}]+\}", "x", path)  # a path parameter: any value reaches the handler
    req = urllib.request.Request(gateway.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
def test_each_route_admits_only_its_role(gateway, method: str, path: str, role: str) -> None:  # type: ignore[no-untyped-def]
    status = status_of(gateway, method, path, ROLES[role])
    allowed = ROUTES[(method, path)]
    if allowed == "anyone" or allowed == role:
        assert status not in (401, 403)  # past the door (an empty body may still be a 400)
    elif role == "nobody":
        assert status == 401
    else:
        assert status in (401, 403)
