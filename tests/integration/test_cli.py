"""The ``passerelle`` command: config check and reference, keys, usage, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from openai import OpenAI

from tests.fakes.gateway import GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = ROOT / "examples" / "minimal.yaml"
MINIMAL_ENV = {"PASSERELLE_ADMIN_TOKEN": "adm-x", "ACME_CLOUD_KEY": "sk-up", "ACME_KEY": "sk-acme"}


def passerelle(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``passerelle ARGS`` with only the given variables on top of a clean environment."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PASSERELLE_") and k not in MINIMAL_ENV
    }
    return subprocess.run(
        [sys.executable, "-m", "passerelle", *args],
        env={**base, **(env or {})},
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- config check / reference ----------------------------------------------------------------------


def test_config_check_accepts_the_minimal_example() -> None:
    out = passerelle("config", "check", str(MINIMAL), env=MINIMAL_ENV)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (f"{MINIMAL}: OK (2 providers, 2 models, 1 tenants, store sqlite)")


@pytest.mark.parametrize(
    ("missing", "field"),
    [
        ("PASSERELLE_ADMIN_TOKEN", "admin_token"),
        ("ACME_CLOUD_KEY", "providers[0].api_key"),
        ("ACME_KEY", "tenants[0].keys[0]"),
    ],
)
def test_config_check_names_the_field_whose_variable_is_missing(missing: str, field: str) -> None:
    env = {k: v for k, v in MINIMAL_ENV.items() if k != missing}
    out = passerelle("config", "check", str(MINIMAL), env=env)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.strip() == f"error: {field}: environment variable {missing} is not set"


def test_config_check_names_an_unknown_key_by_its_path(tmp_path: Path) -> None:
    config = yaml.safe_load(MINIMAL.read_text())
    config["tenants"][0]["budget"] = [{"usd": 5, "period": "day"}]  # budgets, misspelt
    config["providers"][0]["timeout"] = 5  # timeout_s
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    out = passerelle("config", "check", str(path), env=MINIMAL_ENV)
    assert out.returncode == 2
    assert "providers[0].timeout: unknown key" in out.stderr
    assert "tenants[0].budget: unknown key" in out.stderr
    assert "Traceback" not in out.stderr


def test_config_check_names_a_bad_reference_between_sections(tmp_path: Path) -> None:
    config = yaml.safe_load(MINIMAL.read_text())
    config["models"][0]["targets"][0]["provider"] = "nowhere"
    path = tmp_path / "ref.yaml"
    path.write_text(yaml.safe_dump(config))
    out = passerelle("config", "check", str(path), env=MINIMAL_ENV)
    assert out.returncode == 2
    assert "model 'gpt-4o-mini': unknown provider 'nowhere'" in out.stderr


def test_config_check_of_a_missing_file_says_it_cannot_be_read(tmp_path: Path) -> None:
    out = passerelle("config", "check", str(tmp_path / "absent.yaml"))
    assert out.returncode == 2
    assert "absent.yaml: cannot read configuration file" in out.stderr


def test_config_reference_is_what_docs_configuration_md_says() -> None:
    out = passerelle("config", "reference")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("#")
    doc = ROOT / "docs" / "configuration.md"
    if not doc.exists():
        pytest.skip("docs/configuration.md is not written yet")
    assert out.stdout == doc.read_text(encoding="utf-8"), (
        "docs/configuration.md is stale: regenerate it with `passerelle config reference`"
    )


# --- keys ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("cli"), fake_upstream_config(upstream.url)) as g:
        yield g


def test_keys_create_prints_a_key_once_and_the_running_gateway_accepts_it(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    out = gw.cli("keys", "create", "--tenant", "acme", "--name", "ci-bot")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sk-") and len(lines[0]) > 40
    secret = lines[0]
    assert "shown once" in out.stderr and secret not in out.stderr
    key_id = out.stderr.split()[1]
    assert key_id.startswith("key_")

    # the gateway was started before the key existed: it finds it in the store
    with OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert raw.status_code == 200
    assert fresh_upstream.stats()["requests"] == 1

    listed = gw.cli("keys", "list", "--tenant", "acme")
    assert listed.returncode == 0, listed.stderr
    assert f"{key_id}  acme  ci-bot" in listed.stdout.splitlines()
    assert secret not in listed.stdout

    by_key = gw.cli("usage", "--by", "key,tenant")
    assert by_key.returncode == 0, by_key.stderr
    assert any(line.split()[:3] == [key_id, "acme", "1"] for line in by_key.stdout.splitlines())


def test_each_created_key_is_new(gw: GatewayProcess) -> None:
    keys = {gw.cli("keys", "create", "--tenant", "globex").stdout.strip() for _ in range(2)}
    assert len(keys) == 2


def test_keys_create_refuses_a_tenant_the_configuration_does_not_declare(
    gw: GatewayProcess,
) -> None:
    out = gw.cli("keys", "create", "--tenant", "initech")
    assert out.returncode == 2
    assert out.stdout == ""
    assert "unknown tenant 'initech'; the configuration declares: acme, globex" in out.stderr


def test_an_unknown_key_is_still_refused(gw: GatewayProcess) -> None:
    from openai import AuthenticationError

    with (
        OpenAI(base_url=gw.base_url, api_key="sk-never-created", max_retries=0) as client,
        pytest.raises(AuthenticationError) as exc,
    ):
        client.models.list()
    assert exc.value.body["code"] == "invalid_api_key"


# --- usage ---------------------------------------------------------------------------------------


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line and not line.startswith("-")]


def test_usage_by_tenant_and_feature_prints_a_table_with_exact_totals(
    tmp_path: Path, fresh_upstream: UpstreamProcess
) -> None:
    with GatewayProcess(tmp_path / "gw", fake_upstream_config(fresh_upstream.url)) as g:
        empty = g.cli("usage", "--by", "tenant,feature")
        assert empty.returncode == 0, empty.stderr
        assert empty.stdout.strip() == "no usage recorded"
        calls = [  # tenant key, feature, content
            ("sk-test-acme", "summarize", "a #usage:1000,2000,0"),  # $0.00135
            ("sk-test-acme", "summarize", "b #usage:1000,2000,200"),  # $0.001335 (200 cached)
            ("sk-test-acme", None, "c #usage:100,10,0"),  # $0.000021
            ("sk-test-globex", "chat", "d #usage:1000,2000,0"),  # $0.00135
        ]
        for key, feature, content in calls:
            with OpenAI(base_url=g.base_url, api_key=key, max_retries=0) as client:
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": content}],
                    extra_headers={"X-Passerelle-Feature": feature} if feature else {},
                )
        out = g.cli("usage", "--by", "tenant,feature")
    assert out.returncode == 0, out.stderr
    rows = table(out.stdout)
    assert rows[0] == [
        "tenant",
        "feature",
        "requests",
        "input",
        "output",
        "cached",
        "cost_usd",
        "unpriced",
    ]
    assert rows[1:] == [
        ["acme", "-", "1", "100", "10", "0", "0.000021", "0"],
        ["acme", "summarize", "2", "2000", "4000", "200", "0.002685", "0"],
        ["globex", "chat", "1", "1000", "2000", "0", "0.001350", "0"],
        ["TOTAL", "4", "3100", "6010", "200", "0.004056", "0"],
    ]
    total = Decimal("0.00135") + Decimal("0.001335") + Decimal("0.000021") + Decimal("0.00135")
    assert Decimal(rows[-1][5]) == total


def test_usage_refuses_an_unknown_grouping(gw: GatewayProcess) -> None:
    out = gw.cli("usage", "--by", "tenant,colour")
    assert out.returncode == 2
    assert "group_by accepts tenant, feature" in out.stderr and "'colour'" in out.stderr
