"""The routing benchmark: cost and quality of the learned router and the cascade, on prompts the
router never saw, against the best single model, random mixing at equal cost, the static
per-task choice and the oracle.

    .venv/bin/python bench/routing.py [--set routerbench|routellm-mmlu|routellm-gsm8k|all]
                                      [--holdout 0.3] [--seed 1] [--json OUT]

Each data set (converted by ``bench/routing_data.py``) is split by prompt id, within each task
(file or subject), into a training part and a held-out part (``--holdout``, 30% by default,
seeded); the router is trained on the first with ``passerelle.routing.train`` (the code
``passerelle router train`` runs) and every number below is measured on the second only. The
reference model is GPT-4 (1106 preview), as in the published results: quality is its share of
GPT-4's accuracy on the same held-out prompts, cost its share of GPT-4's cost.

- ``router q=τ``: the gateway's rule for ``quality_target: τ`` (``routing/router.py``: the best
  predicted quality less the cost weight the artefact's calibration gives for τ), for a sweep of
  τ; an unfamiliar prompt goes to GPT-4 (the default).
- ``router $≤c``: the cost-ceiling rule, for a sweep of ceilings.
- ``cascade``: the models in order of mean training cost, each answer checked by the gateway's
  default heuristic (``pipeline/cascade.py``) on the response the data set holds, every answer
  tried paid for. MMLU has no responses: no cascade there.
- ``random @ equal cost``: the best accuracy a random mix of two single models reaches at the
  same cost (the upper hull of the single models), for the router's points.
- ``static per task``: per task (file or MMLU subject), the cheapest model within τ of the best
  training accuracy of that task.
- ``oracle``: per prompt, the cheapest model that answered it right.

The decision latency is the time of ``predict`` + ``choose`` per held-out prompt (features
included), p50 and p99, on this machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from routing_data import SETS

from passerelle.pipeline.cascade import heuristic_verdict
from passerelle.routing.router import LearnedRouter, choose
from passerelle.routing.train import Outcome, train

GPT4 = "gpt-4-1106-preview"
TAUS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 1.0)


def split(rows: list[dict[str, Any]], holdout: float, seed: int) -> tuple[set[str], set[str]]:
    by_task: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if not by_task[r["task"]] or by_task[r["task"]][-1] != r["id"]:
            by_task[r["task"]].append(r["id"])
    train_ids, test_ids = set(), set()
    for task in sorted(by_task):
        ids = sorted(set(by_task[task]))
        random.Random(f"{seed}-{task}").shuffle(ids)
        n = max(1, round(len(ids) * holdout))
        test_ids.update(ids[:n])
        train_ids.update(ids[n:])
    return train_ids, test_ids


def prompts_of(rows: list[dict[str, Any]], ids: set[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["id"] in ids:
            p = out.setdefault(
                r["id"], {"prompt": r["prompt"], "task": r["task"], "s": {}, "c": {}, "resp": {}}
            )
            p["s"][r["model"]] = r["score"]
            p["c"][r["model"]] = r["cost_usd"]
            p["resp"][r["model"]] = r.get("response")
    return {k: v for k, v in out.items() if GPT4 in v["s"]}


def hull(points: list[tuple[float, float]], cost: float) -> float:
    """Best accuracy of a random mix of two points at ``cost`` (or a point at most that cost)."""
    best = max((a for c, a in points if c <= cost), default=0.0)
    for c1, a1 in points:
        for c2, a2 in points:
            if c1 < cost < c2:
                w = (cost - c1) / (c2 - c1)
                best = max(best, a1 + w * (a2 - a1))
    return best


def evaluate(name: str, rows: list[dict[str, Any]], holdout: float, seed: int) -> dict[str, Any]:
    train_ids, test_ids = split(rows, holdout, seed)
    outcomes = [
        Outcome(r["prompt"], r["model"], r["score"], r["cost_usd"])
        for r in rows
        if r["id"] in train_ids
    ]
    started = time.perf_counter()
    router = LearnedRouter(train(outcomes))
    train_s = time.perf_counter() - started
    test = list(prompts_of(rows, test_ids).values())
    trainp = list(prompts_of(rows, train_ids).values())
    models = sorted({m for p in test for m in p["s"]})
    g_acc = statistics.fmean(p["s"][GPT4] for p in test)
    g_cost = statistics.fmean(p["c"][GPT4] for p in test)

    def point(picks: list[float], costs: list[float]) -> tuple[float, float]:
        return statistics.fmean(costs) / g_cost, statistics.fmean(picks) / g_acc

    singles = {
        m: point([p["s"].get(m, 0.0) for p in test], [p["c"].get(m, 0.0) for p in test])
        for m in models
    }
    lat: list[float] = []
    preds = []
    weight = router.cost_weight_for(0.95)
    for p in test:
        t0 = time.perf_counter()
        pred = router.predict(p["prompt"])
        choose(pred, models, cost_weight=weight)
        lat.append((time.perf_counter() - t0) * 1000)
        preds.append(pred)

    def run_rule(**kw: Any) -> tuple[float, float]:
        picks, costs = [], []
        for p, pred in zip(test, preds, strict=True):
            avail = [m for m in models if m in p["s"]]
            ch = choose(pred, avail, **kw) if pred.familiar else None
            m = ch.model if ch else GPT4
            picks.append(p["s"][m])
            costs.append(p["c"][m])
        return point(picks, costs)

    curve = {f"router q={t:g}": run_rule(cost_weight=router.cost_weight_for(t)) for t in TAUS}
    mean_cost = sorted(singles, key=lambda m: singles[m][0])
    for frac in (0.05, 0.1, 0.2, 0.3, 0.5):
        ceiling = frac * g_cost
        curve[f"router $<={frac:g}xGPT-4"] = run_rule(max_cost_usd=ceiling)
    static = {}
    by_task: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for p in trainp:
        for m, s in p["s"].items():
            by_task[p["task"]][m].append(s)
    for t in TAUS:
        pick = {}
        for task, ms in by_task.items():
            acc = {m: statistics.fmean(v) for m, v in ms.items()}
            top = max(acc.values())
            ok = [m for m in acc if acc[m] >= t * top]
            pick[task] = min(ok, key=lambda m: singles[m][0])
        static[f"static per task q={t:g}"] = point(
            [p["s"].get(pick.get(p["task"], GPT4), 0.0) for p in test],
            [p["c"].get(pick.get(p["task"], GPT4), 0.0) for p in test],
        )
    cascade = None
    if any(p["resp"].get(GPT4) for p in test):
        picks, costs = [], []
        for p in test:
            spent, got = 0.0, 0.0
            chain = [m for m in mean_cost if m in p["s"]]
            for i, m in enumerate(chain):
                spent += p["c"][m]
                got = p["s"][m]
                if i == len(chain) - 1 or heuristic_verdict(p["resp"].get(m) or "", None) is None:
                    break
            picks.append(got)
            costs.append(spent)
        cascade = point(picks, costs)
    oracle_picks, oracle_costs = [], []
    for p in test:
        right = [m for m in p["s"] if p["s"][m] >= 1.0]
        m = min(right or list(p["s"]), key=lambda m: p["c"][m])
        oracle_picks.append(p["s"][m])
        oracle_costs.append(p["c"][m])
    hull_pts = list(singles.values())
    return {
        "set": name,
        "train_prompts": len(trainp),
        "test_prompts": len(test),
        "gpt4": {"accuracy": g_acc, "cost_usd": g_cost},
        "train_s": train_s,
        "singles": singles,
        "router": {
            k: {"cost": c, "quality": q, "random_at_equal_cost": hull(hull_pts, c)}
            for k, (c, q) in curve.items()
        },
        "static": {k: {"cost": c, "quality": q} for k, (c, q) in static.items()},
        "cascade": None if cascade is None else {"cost": cascade[0], "quality": cascade[1]},
        "oracle": {
            "cost": statistics.fmean(oracle_costs) / g_cost,
            "quality": statistics.fmean(oracle_picks) / g_acc,
        },
        "unfamiliar": sum(not p.familiar for p in preds),
        "decision_ms": {
            "p50": statistics.median(lat),
            "p99": sorted(lat)[int(len(lat) * 0.99) - 1],
        },
    }


def savings_at(result: dict[str, Any], quality: float) -> tuple[str, float] | None:
    """The router point with the lowest cost at or above ``quality`` (share of GPT-4's)."""
    ok = [(k, v["cost"]) for k, v in result["router"].items() if v["quality"] >= quality]
    return min(ok, key=lambda kv: kv[1]) if ok else None


def report(r: dict[str, Any]) -> None:
    print(f"\n## {r['set']}: {r['train_prompts']} training prompts, {r['test_prompts']} held out")
    g = r["gpt4"]
    print(
        f"GPT-4 on the held-out prompts: accuracy {g['accuracy']:.3f}, ${g['cost_usd']:.6f}/query; trained in {r['train_s']:.1f}s"
    )
    print(
        "| strategy | quality (share of GPT-4) | cost (share of GPT-4) | random mix at equal cost |"
    )
    print("| --- | ---: | ---: | ---: |")
    for k, v in r["router"].items():
        print(f"| {k} | {v['quality']:.3f} | {v['cost']:.3f} | {v['random_at_equal_cost']:.3f} |")
    if r["cascade"]:
        print(
            f"| cascade (heuristic check) | {r['cascade']['quality']:.3f} | {r['cascade']['cost']:.3f} | |"
        )
    for k, v in r["static"].items():
        print(f"| {k} | {v['quality']:.3f} | {v['cost']:.3f} | |")
    best = max(r["singles"], key=lambda m: r["singles"][m][1])
    print(f"| best single ({best}) | {r['singles'][best][1]:.3f} | {r['singles'][best][0]:.3f} | |")
    print(f"| oracle | {r['oracle']['quality']:.3f} | {r['oracle']['cost']:.3f} | |")
    at95 = savings_at(r, 0.95)
    if at95:
        print(
            f"At 95% of GPT-4's quality: {at95[0]}, cost {at95[1]:.3f} of GPT-4's (saving {1 - at95[1]:.0%})"
        )
    else:
        print("No router point reaches 95% of GPT-4's quality")
    d = r["decision_ms"]
    print(
        f"decision latency (features + prediction + choice): p50 {d['p50']:.3f} ms, p99 {d['p99']:.3f} ms; {r['unfamiliar']} prompts unfamiliar (sent to the default)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", default="all", choices=["all", *sorted(SETS)])
    ap.add_argument("--holdout", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    names = sorted(SETS) if args.set == "all" else [args.set]
    results = []
    for name in names:
        results.append(evaluate(name, list(SETS[name]()), args.holdout, args.seed))
        report(results[-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
