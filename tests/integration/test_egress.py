"""No hidden egress: the gateway connects to what its configuration names, and nothing else.

The gateway process runs under ``strace -f -e trace=connect``, which sees every connection any of
its threads attempts, TCP, UDP (a DNS lookup) or a Unix socket, whatever makes it (Python,
uvloop's libuv, asyncpg, llama.cpp), from start-up to shutdown. A gateway in scale-out mode
(PostgreSQL, Redis, an OpenAI-compatible and an Anthropic provider on the fake upstream) is
driven through every client endpoint and the admin API: every connection it attempted is to the
upstream, PostgreSQL or Redis. The embedded default (no configuration, the shipped local model)
answers a question having connected to nothing at all: no telemetry, no price, model or list
download. A gateway that pseudonymises personal data (Presidio, the spaCy models, the
public-suffix list ``tldextract`` would fetch at first use) connects only to its upstream too,
from loading the models to restoring an answer. The list of connections is checked to hold the
upstream's, so an empty trace cannot pass for a clean one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from openai import OpenAI

from tests.fakes.gateway import ADMIN_TOKEN, TENANT_KEYS, GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

pytestmark = pytest.mark.skipif(
    shutil.which("strace") is None, reason="needs strace (Debian: apt-get install strace)"
)

INET = re.compile(r'sin6?_port=htons\((\d+)\).*?(?:inet_addr\("([^"]+)"\)|"([0-9a-f:.]+)")')
UNIX = re.compile(r'sun_path=(@?"[^"]*")')


class TracedGateway(GatewayProcess):
    """``passerelle serve`` under strace, every connection attempt written to ``trace``."""

    def __init__(self, workdir: Path, config: dict[str, Any] | None) -> None:
        super().__init__(workdir, config, timeout=120)
        self.trace = workdir / "connect.trace"

    def command(self) -> list[str]:
        trace = ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(self.trace)]
        return [*trace, *super().command()]

    def stop(self) -> None:
        # strace detaches on SIGTERM; the gateway (its child) is the one to stop
        if self.process is not None and self.process.poll() is None:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            for pid in children.read_text().split():
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    os.kill(int(pid), signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        super().stop()

    def destinations(self) -> set[str]:
        """Every address a connection was attempted to: ``host:port`` or ``unix:path``."""
        found = set()
        for line in self.trace.read_text().splitlines():
            if "connect(" not in line:
                continue
            if (m := INET.search(line)) is not None:
                found.add(f"{m.group(2) or m.group(3)}:{m.group(1)}")
            elif (u := UNIX.search(line)) is not None:
                found.add(f"unix:{u.group(1)}")
            elif "AF_UNSPEC" not in line:
                found.add(f"unparsed:{line}")
        return found


def admin_get(gw: GatewayProcess, path: str) -> None:
    req = urllib.request.Request(gw.url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


@pytest.fixture
def scale_out(
    upstream: UpstreamProcess, postgres_url: str, redis_url: str, tmp_path: Path
) -> Iterator[TracedGateway]:
    config = fake_upstream_config(upstream.url, store=postgres_url, redis=redis_url)
    config["providers"].append(
        {
            "name": "claude",
            "kind": "anthropic",
            "base_url": upstream.url,
            "api_key": "env:FAKE_UPSTREAM_KEY",
        }
    )
    config["models"].append(
        {"name": "claude-test", "targets": [{"provider": "claude", "upstream_model": "c-1"}]}
    )
    with TracedGateway(tmp_path, config) as gw:
        yield gw


def test_a_scale_out_gateway_connects_only_to_its_upstreams_and_stores(
    scale_out: TracedGateway, upstream: UpstreamProcess
) -> None:
    gw = scale_out
    with OpenAI(base_url=gw.base_url, api_key=TENANT_KEYS["acme"], max_retries=0) as client:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        list(
            client.chat.completions.create(
                model="claude-test", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
        client.embeddings.create(model="fake-embed", input="x")
        client.models.list()
        client.responses.create(model="gpt-4o-mini", input="hi")
    with anthropic.Anthropic(base_url=gw.url, api_key=TENANT_KEYS["acme"], max_retries=0) as ac:
        ac.messages.create(
            model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    admin_get(gw, "/admin/usage?group_by=tenant")
    gw.stop()
    upstream_at = f"127.0.0.1:{upstream.port}"
    allowed = {upstream_at, "127.0.0.1:5432", "127.0.0.1:6379"}
    found = gw.destinations()
    assert allowed <= found  # the trace saw the connections it should
    assert found <= allowed, f"connections beyond the configuration: {sorted(found - allowed)}"


@pytest.mark.pii_models
def test_a_gateway_that_pseudonymises_connects_only_to_its_upstream(
    upstream: UpstreamProcess, tmp_path: Path
) -> None:
    config = fake_upstream_config(upstream.url)
    config["sovereignty"] = {
        "default_class": "internal",
        "classes": {"internal": {"allow": ["any"], "personal_data": "pseudonymise"}},
    }
    text = (
        "I am Jean Dupont, jean.dupont@example.fr, https://www.example.co.uk/page, "
        "06 12 34 56 78, card 4111 1111 1111 1111, from 10.1.2.3; write to Margaret Thompson."
    )
    with TracedGateway(tmp_path, config) as gw:
        with OpenAI(base_url=gw.base_url, api_key=TENANT_KEYS["acme"], max_retries=0) as client:
            answer = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
            )
            list(
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": text}], stream=True
                )
            )
            client.embeddings.create(model="fake-embed", input=text)
        assert answer.choices[0].message.content
        gw.stop()
        found = gw.destinations()
    assert "jean.dupont" not in str(upstream.stats()["last_request"])
    upstream_at = f"127.0.0.1:{upstream.port}"
    assert upstream_at in found
    assert found == {upstream_at}, f"connections beyond the configuration: {sorted(found)}"


@pytest.mark.local_model
def test_the_embedded_default_connects_to_nothing(tmp_path: Path) -> None:
    with TracedGateway(tmp_path / "empty", None) as gw:
        [key] = [line.rsplit(" ", 1)[1] for line in gw.banner if "your API key" in line]
        with OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=60) as client:
            answer = client.chat.completions.create(
                model="local", messages=[{"role": "user", "content": "hi"}], max_tokens=8
            )
        assert answer.choices[0].message.content is not None
        gw.stop()
        assert gw.trace.is_file()
        assert gw.destinations() == set()
