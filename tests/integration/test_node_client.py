"""The ``openai`` Node SDK (npm) against a real gateway process behind the fake upstream.

Each scenario of ``tests/node/clients.mjs`` runs in its own ``node`` process: plain, streamed, a
tool call round trip (its arguments streamed too), embeddings, a legacy completion, and errors
that keep their class (a budget's 429 is ``RateLimitError``, a bad role ``BadRequestError``). The
SDK is the one ``tests/node/package-lock.json`` pins, installed with ``npm ci`` when
``tests/node/node_modules`` is missing; without ``node`` the tests are skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess
from tests.fakes.upstream import UpstreamProcess
from tests.integration.client_gateway import CLIENT_ENV, THRIFTY_KEY, client_gateway_config

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SCENARIOS = [
    "plain",
    "streamed",
    "tools",
    "embeddings",
    "completions",
    "rate_limited",
    "bad_request",
]


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed: the openai Node SDK tests need Node 20 or later")
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "node is installed without npm: cannot install the openai SDK"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300
        )
    return found


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = client_gateway_config(upstream.url)
    with GatewayProcess(tmp_path_factory.mktemp("node"), config, env=CLIENT_ENV) as g:
        yield g


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_openai_node_sdk_works_through_the_gateway(
    node: str, gw: GatewayProcess, fresh_upstream: UpstreamProcess, scenario: str
) -> None:
    env = {
        **os.environ,
        "GATEWAY_URL": gw.base_url,
        "KEY": TENANT_KEYS["acme"],
        "THRIFTY_KEY": THRIFTY_KEY,
    }
    done = subprocess.run(
        [node, "clients.mjs", scenario],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
