"""The live exit drill: ``passerelle drill --without PROVIDER --live`` against a running gateway.

The providers of ``test_independence.py`` (the fake upstream as ``us``, ``eu`` and ``onprem``,
told apart by the upstream model asked for), plus ``dead``: a provider at a port nothing listens
on, the only fallback of ``dead-fallback``. The fake upstream records what it receives, so the
tests see that the synthetic calls really reach the remaining targets, never the excluded
provider, that the data-class policy still narrows them, that a remaining target which is down
is reported as a failure (exit status 1), and that the calls are metered (feature ``exit-drill``).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.fakes.gateway import GatewayProcess, openai_provider
from tests.fakes.upstream import UpstreamProcess
from tests.integration.test_independence import admin, config, target


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    cfg = config(upstream.url)
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    cfg["providers"].append(openai_provider("dead", dead, jurisdiction="EU", max_retries=0))
    cfg["models"].append(
        {
            "name": "dead-fallback",
            "targets": [
                target("us", "us-chat"),
                {
                    "provider": "dead",
                    "upstream_model": "dead-1",
                    "price": {"input": 1, "output": 1},
                },
            ],
        }
    )
    with GatewayProcess(tmp_path_factory.mktemp("drill"), cfg) as g:
        yield g


def live(gw: GatewayProcess, *args: str) -> tuple[int, dict[str, Any]]:
    out = gw.cli("drill", "--live", "--url", gw.url, "--format", "json", *args)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def test_synthetic_calls_reach_the_remaining_targets_and_never_the_excluded_provider(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    models = ["chat", "eu-chat", "sovereign", "us-only"]
    rc, report = live(
        gw, "--without", "us", "--tenant", "globex", *(a for m in models for a in ("--model", m))
    )
    assert rc == 0 and report["live_ok"] is True
    results = {r["model"]: r for r in report["live"]}
    assert set(results) == {"chat", "eu-chat", "sovereign"}  # us-only has no target left
    assert {m: r["target"] for m, r in results.items()} == {
        "chat": "eu/eu-chat",
        "eu-chat": "eu/eu-only",
        "sovereign": "onprem/onprem-1",
    }
    assert all(r["status"] == "ok" and r["latency_ms"] > 0 for r in results.values())
    asked = fresh_upstream.stats()["models"]
    assert asked == {"eu-chat": 1, "eu-only": 1, "onprem-1": 1}
    assert report["broken_models"] == ["us-only"]
    # metered, under the drill's feature, for the tenant asked
    usage = admin(gw, "/admin/usage?group_by=tenant,feature")
    drill_rows = [r for r in usage["data"] if r["feature"] == "exit-drill"]
    assert [(r["tenant"], r["requests"]) for r in drill_rows] == [("globex", 3)]
    assert Decimal(drill_rows[0]["cost_usd"]) > 0  # their cost is visible
    assert all(r["request_id"] for r in results.values())


def test_a_remaining_target_that_is_down_is_a_failure_in_the_report(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    rc, report = live(gw, "--without", "us", "--model", "dead-fallback")
    assert rc == 1 and report["live_ok"] is False
    [result] = report["live"]
    assert result["status"] == "failed" and result["target"] == "dead/dead-1"
    assert result["error"]
    assert fresh_upstream.stats()["requests"] == 0  # the US target was never tried


def test_the_data_class_policy_still_narrows_the_drills_calls(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    rc, report = live(gw, "--without", "eu", "--model", "chat", "--data-class", "confidential")
    assert rc == 1
    [result] = report["live"]
    assert result["status"] == "failed" and result["target"] is None
    assert "data class 'confidential' allows only EU, self-hosted" in result["error"]
    assert fresh_upstream.stats()["requests"] == 0  # confidential calls of chat had only eu


def test_the_table_shows_each_call(gw: GatewayProcess, fresh_upstream: UpstreamProcess) -> None:
    out = gw.cli("drill", "--without", "us", "--live", "--url", gw.url, "--model", "chat")
    assert out.returncode == 0, out.stderr
    assert "Live: 1 synthetic calls, 0 failed" in out.stdout
    row = next(
        line.split()
        for line in out.stdout.splitlines()
        if line.startswith("chat ") and "ok" in line
    )
    assert row[:3] == ["chat", "ok", "eu/eu-chat"]


def test_bad_live_parameters_are_refused_before_anything_is_sent(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    for extra, said in (
        (["--model", "nope"], "unknown model 'nope'"),
        (["--tenant", "nobody"], "unknown tenant 'nobody'; known: acme, globex"),
        (["--data-class", "top-secret"], "unknown data class 'top-secret'"),
        (["--samples", "9"], "samples must be a whole number from 1 to 5"),
    ):
        out = gw.cli("drill", "--without", "us", "--live", "--url", gw.url, *extra)
        assert out.returncode == 2, (extra, out.stdout)
        assert "the gateway refused the drill (400)" in out.stderr and said in out.stderr
    assert fresh_upstream.stats()["requests"] == 0


def test_no_gateway_at_the_url_is_a_clear_error(gw: GatewayProcess) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    out = gw.cli("drill", "--without", "us", "--live", "--url", url)
    assert out.returncode == 1
    assert f"cannot run the live drill at {url}" in out.stderr
