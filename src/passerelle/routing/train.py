"""Training the learned router from outcomes: one ridge regression per model, chosen by
validation, and the centres that tell a familiar prompt from a foreign one.

The outcomes are rows (prompt, model, score in 0..1, cost in USD): ``routing/outcomes.py`` reads
them from CSV or JSON lines, ``passerelle router train --from-ledger`` from the feedback the
gateway recorded. Each model's quality is a ridge regression on the prompt's features
(``routing/features.py``), fitted on the prompts that model has a score for, with its mean as the
unregularised intercept. The regularisation is chosen on a fifth of the prompts held out (seeded,
so a retrain on the same file gives the same artefact), then the model is refitted on all of
them. A model's cost is a straight line in the prompt's length through its ``cost_usd``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from passerelle.errors import RouterTrainingError
from passerelle.routing.artefact import Artefact
from passerelle.routing.calibrate import curve
from passerelle.routing.features import Hashing, learn_idf, vector

LAMBDAS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
VALIDATION_SHARE = 0.2
FLOOR_PERCENTILE = 2.0  # held-out prompts under this familiarity percentile go to the default
Progress = Callable[[str, int, int], None]  # (phase, done, total)
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Outcome:
    prompt: str
    model: str
    score: float
    cost_usd: float


def _quiet(phase: str, done: int, total: int) -> None:
    return None


class _Kernel:
    """One decomposition of the rows' Gram matrix, reused for every target and every lambda."""

    def __init__(self, x: F32) -> None:
        self.x = x.astype(np.float64)
        n, d = x.shape
        self.dual = n <= d
        gram = self.x @ self.x.T if self.dual else self.x.T @ self.x
        self.vals, self.vecs = np.linalg.eigh(gram)

    def solve(self, y: npt.NDArray[np.float64], lam: float) -> F32:
        """Ridge weights for the centred targets ``y`` (rows × targets)."""
        shrink = 1.0 / (np.maximum(self.vals, 0.0) + lam)
        if self.dual:  # (X Xᵀ + λI) α = y, w = Xᵀ α
            alpha = self.vecs @ (shrink[:, None] * (self.vecs.T @ y))
            return np.asarray(self.x.T @ alpha, dtype=np.float32)
        rhs = self.x.T @ y
        return np.asarray(self.vecs @ (shrink[:, None] * (self.vecs.T @ rhs)), dtype=np.float32)


def _fit_models(
    x: F32, table: list[dict[int, float]], rows: Sequence[int], lams: Sequence[float]
) -> list[tuple[F32, F32]]:
    """Weights (dim × models) and intercepts for the prompts ``rows`` only, for each lambda.
    Models scored on the same prompts share one decomposition."""
    d, m = x.shape[1], len(table)
    out = [(np.zeros((d, m), np.float32), np.zeros(m, np.float32)) for _ in lams]
    keep = set(rows)
    groups: dict[tuple[int, ...], list[int]] = {}
    for j, scores in enumerate(table):
        groups.setdefault(tuple(sorted(i for i in scores if i in keep)), []).append(j)
    for idx, cols in groups.items():
        if not idx:
            continue
        y = np.array([[table[j][i] for j in cols] for i in idx], dtype=np.float64)
        mean = y.mean(axis=0)
        kernel = _Kernel(x[list(idx)]) if len(idx) > 1 else None
        for k, lam in enumerate(lams):
            weights, bias = out[k]
            bias[cols] = mean
            if kernel is not None:
                weights[:, cols] = kernel.solve(y - mean, lam)
    return out


def _error(x: F32, table: list[dict[int, float]], rows: Sequence[int], w: F32, b: F32) -> float:
    pred = np.clip(x[list(rows)] @ w + b, 0.0, 1.0)
    pos = {r: k for k, r in enumerate(rows)}
    err, n = 0.0, 0
    for j, scores in enumerate(table):
        for i, s in scores.items():
            if i in pos:
                err += (pred[pos[i], j] - s) ** 2
                n += 1
    return float(err / n) if n else float("nan")


def _centres(x: F32, k: int, seed: int = 0) -> F32:
    """Spherical k-means: ``k`` unit-length centres of the rows of ``x``."""
    rng = np.random.default_rng(seed)
    live = x[np.linalg.norm(x, axis=1) > 0]
    if len(live) == 0:
        return np.zeros((0, x.shape[1]), dtype=np.float32)
    k = max(1, min(k, len(live)))
    c = live[rng.choice(len(live), size=k, replace=False)].copy()
    for _ in range(12):
        assign = np.argmax(live @ c.T, axis=1)
        for j in range(k):
            members = live[assign == j]
            if len(members):
                v = members.sum(axis=0)
                c[j] = v / max(float(np.linalg.norm(v)), 1e-12)
    return np.asarray(c, dtype=np.float32)


def _familiarity(x: F32, centres: F32) -> npt.NDArray[np.float32]:
    if len(centres) == 0:
        return np.ones(len(x), dtype=np.float32)
    return np.asarray(np.max(x @ centres.T, axis=1), dtype=np.float32)


def _cost_line(lengths: list[float], costs: list[float]) -> tuple[float, float]:
    """USD per call as ``a + b * chars / 1000``, least squares (flat when lengths agree)."""
    c = np.array(costs, dtype=np.float64)
    ln = np.array(lengths, dtype=np.float64)
    if len(c) < 2 or float(np.ptp(ln)) == 0.0:
        return float(c.mean()), 0.0
    b, a = np.polyfit(ln, c, 1)
    return float(a), float(b)


def train(
    outcomes: Sequence[Outcome],
    *,
    hashing: Hashing | None = None,
    progress: Progress = _quiet,
    seed: int = 0,
) -> Artefact:
    hashing = hashing or Hashing()
    prompts: dict[str, int] = {}
    models = sorted({o.model for o in outcomes})
    if not outcomes:
        raise RouterTrainingError("no outcomes to train on")
    col = {m: j for j, m in enumerate(models)}
    table: list[dict[int, float]] = [{} for _ in models]
    lengths: list[list[float]] = [[] for _ in models]
    costs: list[list[float]] = [[] for _ in models]
    paid: list[dict[int, float]] = [{} for _ in models]
    for o in outcomes:
        i = prompts.setdefault(o.prompt, len(prompts))
        j = col[o.model]
        table[j][i] = o.score  # a repeated (prompt, model) keeps its last score
        lengths[j].append(len(o.prompt) / 1000.0)
        costs[j].append(o.cost_usd)
        paid[j][i] = o.cost_usd
    if len(prompts) < 2:
        raise RouterTrainingError("at least two distinct prompts are needed")
    texts = list(prompts)
    progress("features", 0, len(texts))
    idf = learn_idf(texts, hashing)
    x = np.zeros((len(texts), hashing.dim), dtype=np.float32)
    for i, text in enumerate(texts):
        x[i] = vector(text, hashing, idf)
        if i % 256 == 255:
            progress("features", i + 1, len(texts))
    progress("features", len(texts), len(texts))
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_val = max(1, int(len(order) * VALIDATION_SHARE)) if len(order) >= 5 else 0
    val, fit = order[:n_val], order[n_val:]
    scores: dict[float, float] = {}
    held_out: dict[float, tuple[F32, F32]] = {}
    progress("regularisation", 0, 2)
    if val:
        for lam, (w, b) in zip(LAMBDAS, _fit_models(x, table, fit, LAMBDAS), strict=True):
            scores[lam] = _error(x, table, val, w, b)
            held_out[lam] = (w, b)
    progress("regularisation", 1, 2)
    lam = min(scores, key=lambda k: scores[k]) if scores else 1.0
    ((weights, bias),) = _fit_models(x, table, order, [lam])
    progress("regularisation", 2, 2)
    progress("centres", 0, 2)
    k = max(1, min(64, len(texts) // 20))
    floor = 0.0
    if val:
        held = _familiarity(x[val], _centres(x[fit], k, seed))
        floor = float(np.percentile(held, FLOOR_PERCENTILE))
    anchors = _centres(x, k, seed)
    progress("centres", 2, 2)
    cost = np.array([_cost_line(lengths[j], costs[j]) for j in range(len(models))], np.float32)
    calibration: list[tuple[float, float, float]] = []
    if val:
        w, b = held_out[lam]
        q_val = np.clip(x[val] @ w + b, 0.0, 1.0).astype(np.float32)
        chars = np.array([len(texts[i]) / 1000.0 for i in val], dtype=np.float32)
        c_val = np.maximum(cost[:, 0][None, :] + chars[:, None] * cost[:, 1][None, :], 0.0)
        calibration = curve(q_val, c_val.astype(np.float32), table, paid, val)
    return Artefact(
        models=models,
        hashing=hashing,
        idf=idf,
        weights=weights,
        bias=bias,
        cost=cost.reshape(len(models), 2),
        anchors=anchors.astype(np.float16),
        familiarity_floor=floor,
        ridge_lambda=lam,
        calibration=[list(c) for c in calibration],
        trained={
            "rows": len(outcomes),
            "prompts": len(texts),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "validation_mse": {str(k): float(v) for k, v in scores.items()},
        },
    )
