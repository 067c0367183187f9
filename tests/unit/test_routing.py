"""The learned router's pieces: outcomes files, training, the artefact format, the choice rule,
and the ledger's outcome tables and routing columns on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from passerelle.errors import ArtefactError, OutcomesError, RouterTrainingError
from passerelle.routing.artefact import load
from passerelle.routing.calibrate import weight_for
from passerelle.routing.features import Hashing
from passerelle.routing.outcomes import read_outcomes
from passerelle.routing.router import LearnedRouter, Prediction, choose
from passerelle.routing.train import Outcome, train
from passerelle.store.records import Status, UsageRecord
from passerelle.store.sql import SCHEMA
from passerelle.store.sqlite import SQLiteLedger
from tests.unit.test_ledger import Stores, stores  # noqa: F401  (the two-store fixture)

EASY = [f"what is {a} plus {b}" for a in range(6) for b in range(3)]
HARD = [
    f"prove the theorem number {a} about {w}"
    for a in range(6)
    for w in ("primes", "sets", "graphs")
]


def outcomes() -> list[Outcome]:
    rows = []
    for p in EASY + HARD:
        rows.append(Outcome(p, "small", 1.0 if p in EASY else 0.0, 0.001))
        rows.append(Outcome(p, "big", 1.0, 0.1))
    return rows


def test_training_tells_easy_from_hard_and_the_artefact_round_trips(tmp_path: Path) -> None:
    artefact = train(outcomes(), hashing=Hashing(dim=256))
    artefact.save(tmp_path / "r.npz")
    router = LearnedRouter(load(tmp_path / "r.npz"))
    easy = router.predict("what is 9 plus 9")
    hard = router.predict("prove the theorem number 9 about primes")
    assert easy.quality["small"] > 0.6 and hard.quality["small"] < 0.4
    assert choose(easy, ["big", "small"], cost_weight=5.0).model == "small"  # type: ignore[union-attr]
    assert choose(hard, ["big", "small"], cost_weight=5.0).model == "big"  # type: ignore[union-attr]
    assert easy.cost_usd["small"] == pytest.approx(0.001, abs=1e-4)
    assert not router.predict("xylophone quokka zeppelin").familiar


def test_a_cost_ceiling_takes_the_best_model_that_fits() -> None:
    pred = Prediction({"a": 0.9, "b": 0.6}, {"a": 0.02, "b": 0.001}, 1.0, True)
    assert choose(pred, ["a", "b"], max_cost_usd=0.05).model == "a"  # type: ignore[union-attr]
    assert choose(pred, ["a", "b"], max_cost_usd=0.01).model == "b"  # type: ignore[union-attr]
    assert choose(pred, ["c"]) is None


def test_an_artefact_is_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.array([{"format": "passerelle-router"}], dtype=object))
    with pytest.raises(ArtefactError, match=r"not a router artefact|missing arrays"):
        load(path)


def test_an_artefact_of_another_version_or_shape_is_refused(tmp_path: Path) -> None:
    artefact = train(outcomes(), hashing=Hashing(dim=64))
    artefact.save(tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["version"] = 99
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "v99.npz", **arrays)
    with pytest.raises(ArtefactError, match="version 99"):
        load(tmp_path / "v99.npz")
    meta["version"] = 1
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    arrays["weights"] = arrays["weights"][:10]
    np.savez(tmp_path / "shape.npz", **arrays)
    with pytest.raises(ArtefactError, match="`weights` has shape"):
        load(tmp_path / "shape.npz")
    with pytest.raises(ArtefactError, match="no such file"):
        load(tmp_path / "absent.npz")


def test_outcome_files_name_the_line_and_field_that_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "o.jsonl"
    good.write_text(json.dumps({"prompt": "p", "model": "m", "score": 1, "cost_usd": 0.1}) + "\n")
    assert read_outcomes(good) == [Outcome("p", "m", 1.0, 0.1)]
    bad = tmp_path / "o.csv"
    bad.write_text("prompt,model,score,cost_usd\np,m,1,0.1\np,m,1.5,0.1\n")
    with pytest.raises(OutcomesError, match=r"o\.csv:3: score must be from 0 to 1"):
        read_outcomes(bad)
    bad.write_text("prompt,model\np,m\n")
    with pytest.raises(OutcomesError, match="header lacks score, cost_usd"):
        read_outcomes(bad)
    bad.write_text("prompt,model,score,cost_usd\np,m,1,-2\n")
    with pytest.raises(OutcomesError, match="cost_usd must not be negative"):
        read_outcomes(bad)
    with pytest.raises(RouterTrainingError, match="two distinct prompts"):
        train([Outcome("p", "m", 1.0, 0.1)])


def _record(request_id: str, **kw: object) -> UsageRecord:
    base: dict[str, object] = dict(
        request_id=request_id, attempt=1, ts=time.time(), tenant="acme", key_id="k", feature=None,
        end_user=None, endpoint="chat.completions", model="auto", provider="fake",
        upstream_model="small-1", input_tokens=10, output_tokens=5, cached_tokens=0,
        usage_reported=True, cost_usd=Decimal("0.000002"), price_version=None, latency_ms=1.0,
        ttft_ms=None, status=Status.OK, error_code=None, stream=False,
    )  # fmt: skip
    base.update(kw)
    return UsageRecord(**base)  # type: ignore[arg-type]


async def test_feedback_and_captured_prompts_make_outcomes(stores: Stores) -> None:  # noqa: F811
    ledger = await stores.open()
    saved = Decimal("0.000098")
    await ledger.record(
        _record("r1", routed_to="small", route_reason="rule 1", route_saved_usd=saved)
    )
    await ledger.record(_record("r2", tenant="globex"))
    await ledger.capture_prompt("r1", "acme", None, "what is 2 plus 2")
    await ledger.capture_prompt("r2", "globex", "f", "hello")
    await ledger.record_feedback("r1", "acme", 0.2, None)
    await ledger.record_feedback("r1", "acme", 0.9, "good")  # the last word is kept
    await ledger.record_feedback("r2", "globex", 1.0, None)
    (row,) = await ledger.records("r1")
    assert (row.routed_to, row.route_reason, row.route_saved_usd) == ("small", "rule 1", saved)
    (one,) = await ledger.outcomes("acme")
    assert (one.prompt, one.model, one.score, one.label) == (
        "what is 2 plus 2",
        "small",
        0.9,
        "good",
    )
    assert one.cost_usd == Decimal("0.000002")
    assert {o.model for o in await ledger.outcomes()} == {"small", "auto"}


async def test_an_older_sqlite_ledger_gains_the_routing_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = SCHEMA[0]
    for column in ("routed_to TEXT,", "route_reason TEXT,", "route_saved_pusd BIGINT,"):
        old = old.replace(column, "")
    with sqlite3.connect(path) as conn:
        conn.execute(old)
    ledger = SQLiteLedger(str(path))
    await ledger.start()
    try:
        await ledger.record(_record("r1", routed_to="big"))
        (row,) = await ledger.records("r1")
        assert row.routed_to == "big" and row.route_saved_usd is None
    finally:
        await ledger.close()


def test_the_quality_target_takes_the_cheapest_weight_that_kept_it() -> None:
    curve = [[0.0, 1.0, 1.0], [10.0, 0.97, 0.5], [20.0, 0.96, 0.4], [40.0, 0.9, 0.2]]
    assert weight_for(curve, 0.95) == 20.0
    assert weight_for(curve, 0.99) == 0.0
    assert weight_for([], 0.95) == 0.0
