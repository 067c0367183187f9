"""Fuzzing the whole API from its own OpenAPI description: no request may get a 5xx.

A real ``passerelle serve`` in front of the fake upstream; schemathesis reads ``/openapi.json``
from it and generates requests for every operation, valid ones (which reach the upstream) and
invalid ones (which must be refused), each sent with the credentials the route needs. Every answer
must be below 500, and every 4xx must be OpenAI's error shape. The run is bounded: at most
``EXAMPLES`` requests per operation and mode, and ``BUDGET_S`` seconds per store (SQLite, then
PostgreSQL with Redis, where they run); the seed corpus of
crashes already found is tests/contract/test_hostile_input.py.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.contract.test_route_roles import ROUTES
from tests.fakes.gateway import ADMIN_TOKEN, TENANT_KEYS, GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

# a longer, randomised run: PASSERELLE_FUZZ_EXAMPLES=500 PASSERELLE_FUZZ_BUDGET_S=600 pytest <this file>
EXAMPLES = int(os.environ.get("PASSERELLE_FUZZ_EXAMPLES", "25"))
BUDGET_S = float(os.environ.get("PASSERELLE_FUZZ_BUDGET_S", "20"))  # per store
DERANDOMIZE = "PASSERELLE_FUZZ_EXAMPLES" not in os.environ  # the normal run is the same every time
SECRETS = (TENANT_KEYS["acme"], ADMIN_TOKEN, "sk-upstream-secret")


@pytest.fixture(params=["sqlite", "postgres+redis"])
def gw(
    request: pytest.FixtureRequest,
    upstream: UpstreamProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    extra: dict[str, Any] = {}
    if request.param == "postgres+redis":  # NUL bytes, overflows: what PostgreSQL refuses
        extra = {
            "store": request.getfixturevalue("postgres_url"),
            "redis": request.getfixturevalue("redis_url"),
        }
    workdir = tmp_path_factory.mktemp("fuzz")
    with GatewayProcess(workdir, fake_upstream_config(upstream.url, **extra)) as g:
        yield g


def fetch(url: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TENANT_KEYS['acme']}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def served_schema(gw: GatewayProcess) -> Any:
    """The gateway's own document, with its model names filled in (the served document names
    none), so valid requests get past routing and reach the upstream."""
    doc = fetch(gw.url + "/openapi.json")
    models = [m["id"] for m in fetch(gw.base_url + "/models")["data"]]
    schemas = doc["components"]["schemas"]
    schemas["ChatCompletionRequest"]["properties"]["model"]["enum"] = models
    schemas["EmbeddingsRequest"]["properties"]["model"]["enum"] = models
    schemas["MessagesRequest"]["properties"]["model"]["enum"] = models
    schemas["ResponsesRequest"]["properties"]["model"]["enum"] = models
    return schemathesis.openapi.from_dict(doc)


def credentials(operation: Any) -> dict[str, str]:
    security = operation.definition.raw.get("security", [])
    names = {name for requirement in security for name in requirement}
    if "adminToken" in names:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if "tenantKey" in names:
        return {"Authorization": f"Bearer {TENANT_KEYS['acme']}"}
    return {}


def check_answer(case: Any, response: Any) -> None:
    where = f"{case.method} {case.path}: {case.as_curl_command()[:600]}"
    assert response.status_code < 500, f"{response.status_code} for {where}: {response.text[:300]}"
    for secret in SECRETS:
        assert secret not in response.text, where
    if response.status_code >= 400 and case.path.startswith("/v1/messages"):
        doc = response.json()  # Anthropic's shape
        assert sorted(doc) == ["error", "type"] and doc["type"] == "error", where
        assert sorted(doc["error"]) == ["message", "type"], where
        assert isinstance(doc["error"]["message"], str) and doc["error"]["message"], where
    elif response.status_code >= 400:
        doc = response.json()
        assert list(doc) == ["error"], where
        assert sorted(doc["error"]) == ["code", "message", "param", "type"], where
        assert isinstance(doc["error"]["message"], str) and doc["error"]["message"], where


def test_no_generated_request_gets_a_5xx(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    schema = served_schema(gw)
    deadline = time.monotonic() + BUDGET_S
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(ROUTES)  # every route of the API, admin included

    for operation in operations:
        headers = credentials(operation)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=DERANDOMIZE,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                if time.monotonic() > deadline:
                    return
                response = case.call(base_url=gw.url, headers=headers, timeout=15)  # noqa: B023 (run now)
                statuses[response.status_code] += 1
                check_answer(case, response)

            try:
                run()
            except Unsatisfiable:  # nothing to get wrong (no parameters, no body): no negatives
                assert mode is GenerationMode.NEGATIVE

    sent = sum(statuses.values())
    print(f"fuzz: {sent} requests, statuses {dict(sorted(statuses.items()))}")
    assert sent >= 100, statuses  # the budget was not spent before the run had begun
    assert any(200 <= s < 300 for s in statuses), statuses  # valid requests were served
    assert any(400 <= s < 500 for s in statuses), statuses  # invalid ones were refused
    assert "Traceback" not in gw.stderr()
