"""Shared fixtures: real servers on loopback, and the services the store tests need.

PostgreSQL (127.0.0.1:5432, database ``test``) and Redis (127.0.0.1:6379) are used where they run.
Where one is down, its tests are skipped and the run says so loudly at the end; with ``CI=true`` a
missing service fails those tests instead, never a silent skip.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from tests.fakes.gateway import ADMIN_TOKEN, TENANT_KEYS, GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

POSTGRES_URL = os.environ.get(
    "PASSERELLE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("PASSERELLE_TEST_REDIS", "redis://127.0.0.1:6379/0")
SKIPPED_SERVICES: set[str] = set()


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if _listening(host, port):
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{name} is not reachable on {host}:{port}; CI needs it (see .ci/run)")
    SKIPPED_SERVICES.add(f"{name} ({host}:{port})")
    pytest.skip(f"{name} is not running on {host}:{port}")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    if SKIPPED_SERVICES:
        terminalreporter.section("services missing", sep="!", red=True, bold=True)
        for s in sorted(SKIPPED_SERVICES):
            terminalreporter.write_line(f"SKIPPED every test that needs {s}", red=True, bold=True)


@pytest.fixture(scope="session")
def upstream() -> Iterator[UpstreamProcess]:
    with UpstreamProcess() as up:
        yield up


@pytest.fixture(scope="session")
def gateway(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """One gateway for the session, in front of the fake upstream."""
    workdir = tmp_path_factory.mktemp("gateway")
    with GatewayProcess(workdir, fake_upstream_config(upstream.url)) as gw:
        yield gw


@pytest.fixture
def fresh_upstream(upstream: UpstreamProcess) -> UpstreamProcess:
    upstream.reset()
    return upstream


@pytest.fixture
def sdk() -> Iterator[Sdk]:
    """``sdk(gateway, key=acme's)``: an openai client of that gateway, closed at teardown.

    It never retries (``max_retries=0``): every call is one request, so the tests count them.
    """
    clients: list[OpenAI] = []

    def make(gateway: GatewayProcess, key: str = TENANT_KEYS["acme"]) -> OpenAI:
        clients.append(OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def client(gateway: GatewayProcess, sdk: Sdk) -> OpenAI:
    return sdk(gateway)


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
