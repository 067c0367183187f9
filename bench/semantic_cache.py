"""The semantic cache measured: how often it answers duplicates, how often it answers wrongly, how
fast it looks up among 100,000 entries, and what an entry holds in memory.

    .venv/bin/python bench/semantic_cache.py [--entries N] [--embeddings FILE] [--skip-scale]

**Hits and false hits** on ``../shared/data/cache/qqp_pairs.json`` (40,384 Quora question pairs,
37% duplicates): each pair's ``text_a`` is stored and its ``text_b`` asked; a hit on a duplicate
(label 1) is a hit, a hit on a non-duplicate (label 0) a false hit. The pairs are split once by
position: **even positions tune** (the default threshold and the lexical check were chosen on
them), **odd positions are held out** and only reported. For each threshold: the hit rate on
duplicates and the false-hit rate, with the cosine alone and with the lexical second check
(``pipeline/lexical.py``), on both halves. Then the same prompts through ``mock_data.json``
(999 sentence pairs, each a paraphrase: the hit rate at the default).

**Lookup at scale**: an index of N entries (default 100,000) in one partition, the stored
prompts' embeddings being the QQP questions' (repeated with a little noise past 80,768); a
lookup is the embedding of a new prompt, the nearest search, and the lexical check, timed over
the held-out questions. Memory per entry: the process's resident memory before and after filling
the index (the HNSW graph, the vectors as float16, the entry's record and its prompt;
the answer itself is in the answer store, measured by ``bench/cache.py``). The time the encoder
holds the event loop is measured too: a coroutine ticking every millisecond while prompts are
embedded in the encoder's thread, its longest gap.

Embeddings of the QQP and mock texts take ~3 minutes on one core; ``--embeddings FILE`` keeps
them (npz) for the next run. Numbers are printed; nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from passerelle.config.cache import DEFAULT_THRESHOLD  # noqa: E402
from passerelle.pipeline.embedding import Embedder, load  # noqa: E402
from passerelle.pipeline.lexical import conflict, surface  # noqa: E402
from passerelle.store.vectors import VectorIndex  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cache"
THRESHOLDS = [round(0.90 + 0.005 * i, 3) for i in range(18)]


def embed_all(embedder: Embedder, texts: list[str]) -> np.ndarray:
    return np.stack([embedder.encode(t) for t in texts])


def embeddings(
    embedder: Embedder, cache: Path | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    pairs = json.loads((DATA / "qqp_pairs.json").read_text())
    mock = json.loads((DATA / "mock_data.json").read_text())
    if cache is not None and cache.exists():
        e = dict(np.load(cache))
    else:
        t0 = time.perf_counter()
        e = {
            "A": embed_all(embedder, [p["text_a"] for p in pairs]),
            "B": embed_all(embedder, [p["text_b"] for p in pairs]),
            "O": embed_all(embedder, [m["origin"] for m in mock]),
            "S": embed_all(embedder, [m["similar"] for m in mock]),
        }
        n = 2 * (len(pairs) + len(mock))
        print(f"embedded {n} texts, {(time.perf_counter() - t0) / n * 1e3:.2f} ms each")
        if cache is not None:
            np.savez(cache, **e)
    return pairs, {"pairs": e, "mock": mock}


def rates(hit: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    return float(hit[labels == 1].mean() * 100), float(hit[labels == 0].mean() * 100)


def sweep(pairs: list[dict[str, Any]], e: dict[str, np.ndarray]) -> None:
    cos = (e["A"] * e["B"]).sum(1)
    labels = np.array([p["label"] for p in pairs])
    why = [conflict(surface(p["text_a"]), surface(p["text_b"])) for p in pairs]
    passes = np.array([w is None for w in why])
    halves = {"tuning (even)": np.arange(len(pairs)) % 2 == 0}
    halves["held-out (odd)"] = ~halves["tuning (even)"]
    print("\nQQP: hit rate on duplicates / false-hit rate on non-duplicates, per threshold")
    print("| threshold | " + " | ".join(f"{h}: cosine | {h}: + lexical" for h in halves) + " |")
    print("|---" * (1 + 2 * len(halves)) + "|")
    for t in [*THRESHOLDS, DEFAULT_THRESHOLD]:
        cells = []
        for part in halves.values():
            for lexical in (False, True):
                hit = (cos >= t) & (passes if lexical else True)
                dup, false = rates(hit[part], labels[part])
                cells.append(f"{dup:.1f}% / {false:.2f}%")
        mark = " (default)" if t == DEFAULT_THRESHOLD else ""
        print(f"| {t:.3f}{mark} | " + " | ".join(cells) + " |")
    held = halves["held-out (odd)"]
    counts: dict[str, list[int]] = {}
    for w, label, h in zip(why, labels, held, strict=True):
        if h and w is not None:
            counts.setdefault(w, [0, 0])[label] += 1
    print("\nheld-out pairs the lexical check calls different (non-duplicates, duplicates):")
    for w, (neg, pos) in sorted(counts.items()):
        print(f"  {w}: {neg}, {pos}")


def mock(data: dict[str, Any]) -> None:
    e = data["pairs_mock"]
    cos = (e["O"] * e["S"]).sum(1)
    ok = np.array(
        [conflict(surface(m["origin"]), surface(m["similar"])) is None for m in data["mock"]]
    )
    hit = (cos >= DEFAULT_THRESHOLD) & ok
    print(
        f"\nmock_data.json (999 paraphrase pairs): {hit.mean() * 100:.1f}% hit at the default "
        f"({(cos >= DEFAULT_THRESHOLD).mean() * 100:.1f}% on the cosine alone; "
        f"{(cos >= 0.8).mean() * 100:.1f}% at 0.8)"
    )


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def scale(
    embedder: Embedder, pairs: list[dict[str, Any]], e: dict[str, np.ndarray], n: int
) -> None:
    stored = np.concatenate([e["A"], e["B"]])
    texts = [p["text_a"] for p in pairs] + [p["text_b"] for p in pairs]
    rng = np.random.default_rng(0)
    while len(stored) < n:
        extra = stored[: n - len(stored)] + rng.normal(
            0, 0.02, (min(n - len(stored), len(stored)), stored.shape[1])
        )
        stored = np.concatenate(
            [stored, (extra / np.linalg.norm(extra, axis=1, keepdims=True)).astype(np.float32)]
        )
        texts = texts + texts[: len(extra)]
    stored, texts = stored[:n], texts[:n]
    index = VectorIndex(stored.shape[1], max_entries=n, ttl_s=3600)
    before = rss()
    t0 = time.perf_counter()
    index.add_batch("p", [f"k{i}" for i in range(n)], stored, texts)
    built = time.perf_counter() - t0
    per_entry = (rss() - before) / n
    asked = [p["text_b"] for p in pairs[1::2][:300]]
    times, search = [], []
    for text in asked:
        t0 = time.perf_counter()
        vector = embedder.encode(text)
        t1 = time.perf_counter()
        mine = surface(text)
        for entry, score in index.nearest("p", vector, 4):
            if score < DEFAULT_THRESHOLD:
                break
            if conflict(mine, surface(entry.prompt)) is None:
                break
        t2 = time.perf_counter()
        times.append((t2 - t0) * 1e3)
        search.append((t2 - t1) * 1e3)
    print(
        f"\n{n} entries (built in {built:.0f} s): lookup p50 {statistics.median(times):.2f} ms, "
        f"p99 {np.percentile(times, 99):.2f} ms (of which search + lexical check p50 "
        f"{statistics.median(search):.3f} ms); memory {per_entry:.0f} bytes per entry"
    )


async def loop_gap(embedder: Embedder, prompts: list[str]) -> float:
    gaps: list[float] = []
    done = False

    async def tick() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    for p in prompts:
        await embedder.embed(p)
    done = True
    await ticker
    return max(gaps) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--embeddings", type=Path, help="keep the QQP and mock embeddings here (npz)")
    p.add_argument("--skip-scale", action="store_true", help="no index of --entries entries")
    args = p.parse_args()
    embedder = load()
    pairs, data = embeddings(embedder, args.embeddings)
    e = data["pairs"]
    data["pairs_mock"] = e
    sweep(pairs, e)
    mock(data)
    prompts = [q["text_b"] for q in pairs[1::2][:200]]
    t0 = time.perf_counter()
    for q in prompts:
        embedder.encode(q)
    print(f"\nembedding: {(time.perf_counter() - t0) / len(prompts) * 1e3:.2f} ms per prompt")
    gap = asyncio.run(loop_gap(embedder, prompts))
    print(
        f"longest event-loop gap while embedding {len(prompts)} prompts in the thread: {gap:.1f} ms"
    )
    if not args.skip_scale:
        scale(embedder, pairs, e, args.entries)


if __name__ == "__main__":
    main()
