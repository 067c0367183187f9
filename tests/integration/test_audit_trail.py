"""The audit trail of a real gateway, on SQLite and PostgreSQL, and an insider who rewrites it.

A gateway with a data-class policy and an audit key serves a few calls (one of them retried
after an upstream 500, one confidential, one with an end user), then stops, signing its chain's
head. Each attempt is a record saying where the data went and why, with the end user only as a
keyed pseudonym and no prompt text; ``passerelle audit verify`` finds the trail intact. Then the
database is edited as an insider would: a record changed, a record deleted, the tail cut with
the checkpoints beside it. ``verify`` names the first bad record each time, the cut tail against
an export kept elsewhere. A gateway killed before it wrote its records to the store loses none:
the next start writes them from the process's spool file, in the dead chain, intact.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import openai
import orjson
import pytest
from openai import OpenAI

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

SECRET = "hi, my card is 4111 1111 1111 1111 #usage:10,5,0"


class Trail:
    """The audit tables of one store, to read and to tamper with."""

    def __init__(self, store: str) -> None:
        self.store = store

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.store.startswith("sqlite:///"):
            with closing(sqlite3.connect(self.store.removeprefix("sqlite:///"))) as db, db:
                return db.execute(statement.replace("%s", "?"), params).fetchall()

        async def run() -> list[tuple[Any, ...]]:
            db = await asyncpg.connect(self.store)
            try:
                numbered = statement
                for i in range(len(params)):
                    numbered = numbered.replace("%s", f"${i + 1}", 1)
                return [tuple(r) for r in await db.fetch(numbered, *params)]
            finally:
                await db.close()

        return asyncio.run(run())

    def bodies(self) -> list[dict[str, Any]]:
        rows = self.sql("SELECT body FROM audit_records ORDER BY chain, seq")
        return [orjson.loads(r[0]) for r in rows]


def served(
    tmp_path: Path, upstream: UpstreamProcess, store: str, flush_every_s: float = 0.05
) -> GatewayProcess:
    config = fake_upstream_config(upstream.url, store=store)
    fake = {**config["providers"][0], "max_retries": 1}
    config["providers"] = [
        {**fake, "name": "us", "jurisdiction": "US"},
        {**fake, "name": "eu", "jurisdiction": "EU"},
    ]
    price = {"input": 1, "output": 1}
    config["models"] = [
        {
            "name": "mixed",
            "targets": [
                {"provider": "us", "upstream_model": "us-1", "price": price},
                {"provider": "eu", "upstream_model": "eu-1", "price": price},
            ],
        }
    ]
    config["sovereignty"] = {
        "classes": {
            "internal": {"allow": ["any"]},
            "confidential": {"allow": ["EU"]},
            "secret": {"allow": ["self-hosted"]},
        }
    }
    config["audit"] = {"key": "env:AUDIT_KEY", "flush_every_s": flush_every_s}
    return GatewayProcess(tmp_path, config, env={"AUDIT_KEY": "audit-key-for-tests"})


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
        return
    url: str = request.getfixturevalue("postgres_url")
    trail = Trail(url)
    trail.sql("DROP TABLE IF EXISTS audit_records")
    trail.sql("DROP TABLE IF EXISTS audit_checkpoints")
    yield url


def drive(gw: GatewayProcess, upstream: UpstreamProcess) -> None:
    messages = [{"role": "user", "content": SECRET}]
    with OpenAI(base_url=gw.base_url, api_key=TENANT_KEYS["acme"], max_retries=0) as client:
        client.chat.completions.create(model="mixed", messages=messages, user="alice@example.com")
        client.chat.completions.create(
            model="mixed",
            messages=messages,
            extra_headers={
                "X-Passerelle-Data-Class": "confidential",
                "X-Passerelle-Feature": "crm",
            },
        )
        upstream.script({"status": 500})  # the first attempt fails, its retry answers
        client.chat.completions.create(model="mixed", messages=messages)
        with pytest.raises(openai.PermissionDeniedError):  # no attempt: nothing to record
            client.chat.completions.create(
                model="mixed",
                messages=messages,
                extra_headers={"X-Passerelle-Data-Class": "secret"},
            )


def test_every_attempt_is_recorded_verified_and_every_rewrite_named(
    tmp_path: Path, upstream: UpstreamProcess, store: str
) -> None:
    gw = served(tmp_path / "gw", upstream, store)
    with gw:
        drive(gw, upstream)
    trail = Trail(store)
    started, *attempts = trail.bodies()
    assert started["event"] == "chain_started"
    assert [(a["provider"], a["outcome"]) for a in attempts] == [
        ("us", "ok"),
        ("eu", "ok"),
        ("us", "upstream_http_500"),
        ("us", "ok"),
    ]
    confidential = attempts[1]
    assert (confidential["data_class"], confidential["jurisdiction"]) == ("confidential", "EU")
    assert confidential["feature"] == "crm"
    assert confidential["rejected"] == [
        ["policy: data class 'confidential' allows only EU", ["us/us-1"]]
    ]
    assert attempts[0]["user"].startswith("u_") and attempts[2]["user"] is None
    text = str(trail.sql("SELECT body FROM audit_records"))
    assert "alice" not in text and "4111" not in text  # neither the user nor the prompt

    ok = gw.cli("audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "intact: 5 records in 1 chain(s), 1 checkpoint(s)" in ok.stdout
    export = tmp_path / "kept-elsewhere.jsonl"
    assert gw.cli("audit", "export", "--out", str(export)).returncode == 0
    assert gw.cli("audit", "verify", "--from", str(export)).returncode == 0

    trail.sql("UPDATE audit_records SET body = replace(body, 'EU', 'US') WHERE seq = 3")
    edited = gw.cli("audit", "verify")
    assert edited.returncode == 1 and "record 3: edited" in edited.stdout

    trail.sql("DELETE FROM audit_records WHERE seq = 3")
    deleted = gw.cli("audit", "verify")
    assert deleted.returncode == 1 and "record 3: missing" in deleted.stdout

    trail.sql("DELETE FROM audit_records WHERE seq >= 3")
    trail.sql("DELETE FROM audit_checkpoints")
    assert gw.cli("audit", "verify").returncode == 0  # a cut the store alone cannot show
    cut = gw.cli("audit", "verify", "--checkpoints", str(export))
    assert cut.returncode == 1 and "record 3: cut" in cut.stdout


def test_a_gateway_killed_before_writing_its_records_loses_none(
    tmp_path: Path, upstream: UpstreamProcess, store: str
) -> None:
    gw = served(tmp_path / "gw", upstream, store, flush_every_s=60)  # nothing written in time
    gw.start()
    try:
        drive(gw, upstream)
    finally:
        gw.kill()
        gw.stop()
    with gw:  # the next start finds the dead process's records
        pass
    trail = Trail(store)
    events = [(b["event"], b.get("outcome")) for b in trail.bodies()]
    assert events.count(("chain_started", None)) == 2
    assert [e for e in events if e[0] == "attempt"] == [
        ("attempt", "ok"),
        ("attempt", "ok"),
        ("attempt", "upstream_http_500"),
        ("attempt", "ok"),
    ]
    ok = gw.cli("audit", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "intact: 6 records in 2 chain(s)" in ok.stdout
