"""Converters from the public routing data sets to outcomes (prompt, model, score, cost_usd).

They live here, not in the package: the gateway learns from an operator's own outcomes, and these
files are only how the benchmarks (``bench/routing.py``) and anyone trying the router get some.

    .venv/bin/python bench/routing_data.py routerbench OUT.jsonl [--data DIR]
    .venv/bin/python bench/routing_data.py routellm-mmlu OUT.jsonl
    .venv/bin/python bench/routing_data.py routellm-gsm8k OUT.jsonl

- RouterBench (``routerbench/*.csv``): one row per prompt, a score column per model (0/1, a few
  missing) and ``<model>|total_cost``, the real cost of that call. The prompt is a Python list
  literal of strings (read with ``ast.literal_eval``, never ``eval``), joined with newlines.
- RouteLLM (``routellm/mmlu/*.csv``, ``routellm/gsm8k/gsm8k_responses.csv``): GPT-4 (1106
  preview) and Mixtral 8x7B, True/False per prompt, no cost. The cost is priced here from tokens
  (characters / 4, erring on no side) at the list prices RouteLLM's paper used (GPT-4 $10/$30
  and Mixtral $0.6/$0.6 per million input/output tokens); output tokens are the response's
  length where the file has it (GSM8K) or a one-letter answer (MMLU).

Each prompt also gets its ``task`` (the file or subject) and a stable ``id``, for the splits.
"""

from __future__ import annotations

import argparse
import ast
import csv
import glob
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing"
ROUTELLM_PRICES = {  # USD per million (input, output) tokens
    "gpt-4-1106-preview": (10.0, 30.0),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": (0.6, 0.6),
}
csv.field_size_limit(1 << 30)


def _prompt_text(raw: str) -> str:
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return str(value)


def routerbench(data: Path = DATA) -> Iterator[dict[str, Any]]:
    for path in sorted((data / "routerbench").glob("*.csv")):
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            models = [c.split("|")[0] for c in reader.fieldnames or [] if c.endswith("|total_cost")]
            for row in reader:
                prompt = _prompt_text(row["prompt"])
                for m in models:
                    score, cost = row.get(m), row.get(f"{m}|total_cost")
                    if not score or not cost:
                        continue  # a call the data set has no result for
                    yield {
                        "id": row["sample_id"],
                        "task": row["eval_name"],
                        "prompt": prompt,
                        "model": m,
                        "score": float(score),
                        "cost_usd": float(cost),
                        "response": _prompt_text(row.get(f"{m}|model_response") or ""),
                    }


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _priced(model: str, prompt: str, output_tokens: int) -> float:
    pin, pout = ROUTELLM_PRICES[model]
    return (_tokens(prompt) * pin + output_tokens * pout) / 1e6


def routellm_mmlu(data: Path = DATA) -> Iterator[dict[str, Any]]:
    for path in sorted(glob.glob(str(data / "routellm" / "mmlu" / "mmlu_*.csv"))):
        task = Path(path).stem.removeprefix("mmlu_")
        with open(path, newline="") as f:
            for n, row in enumerate(csv.DictReader(f)):
                for m in ROUTELLM_PRICES:
                    yield {
                        "id": f"{task}-{n}",
                        "task": task,
                        "prompt": row["prompt"],
                        "model": m,
                        "score": 1.0 if row[m] == "True" else 0.0,
                        "cost_usd": _priced(m, row["prompt"], 1),
                    }


def routellm_gsm8k(data: Path = DATA) -> Iterator[dict[str, Any]]:
    path = data / "routellm" / "gsm8k" / "gsm8k_responses.csv"
    with path.open(newline="") as f:
        for n, row in enumerate(csv.DictReader(f)):
            for m in ROUTELLM_PRICES:
                yield {
                    "id": f"gsm8k-{n}",
                    "task": "gsm8k",
                    "prompt": row["prompt"],
                    "model": m,
                    "score": 1.0 if row[m] == "True" else 0.0,
                    "cost_usd": _priced(m, row["prompt"], _tokens(row[f"{m}_response"] or "")),
                    "response": row[f"{m}_response"] or "",
                }


SETS = {
    "routerbench": routerbench,
    "routellm-mmlu": routellm_mmlu,
    "routellm-gsm8k": routellm_gsm8k,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("set", choices=sorted(SETS))
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args(argv)
    n = 0
    with args.out.open("w") as f:
        for row in SETS[args.set](args.data):
            f.write(json.dumps(row) + "\n")
            n += 1
    print(f"{n} outcomes written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
