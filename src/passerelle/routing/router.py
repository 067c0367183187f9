"""The learned router at serving time: predict each model's quality and cost, then choose.

``choose`` is the one rule the gateway, the benchmarks and the tests share. With a quality
target, the candidate with the best predicted quality less ``cost_weight`` times its predicted
cost, the weight being the one the artefact's calibration says keeps the target over held-out
traffic (``cost_weight_for``, ``routing/calibrate.py``). With a cost ceiling instead: the best
predicted quality among the candidates whose predicted cost fits under it (the cheapest when
none does). A prompt unlike the training prompts
(familiarity under the artefact's floor) is not predicted at all: the caller serves its default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from passerelle.routing.artefact import Artefact
from passerelle.routing.calibrate import weight_for
from passerelle.routing.features import Vector, vector


@dataclass(frozen=True, slots=True)
class Prediction:
    quality: dict[str, float]
    cost_usd: dict[str, float]
    familiarity: float  # best cosine to the training prompts' centres, 0..1
    familiar: bool


@dataclass(frozen=True, slots=True)
class Choice:
    model: str
    reason: str  # for the header and the ledger: "learned q=0.82>=0.95*0.86"


class LearnedRouter:
    def __init__(self, artefact: Artefact) -> None:
        self.artefact = artefact
        self.models = artefact.models
        self._index = {m: i for i, m in enumerate(artefact.models)}
        self._anchors = artefact.anchors.astype(np.float32)

    def features(self, text: str) -> Vector:
        a = self.artefact
        return vector(text, a.hashing, a.idf)

    def predict(self, text: str) -> Prediction:
        a = self.artefact
        x = self.features(text)
        q = np.clip(a.bias + x @ a.weights, 0.0, 1.0)
        chars = len(text) / 1000.0
        cost = np.maximum(a.cost[:, 0] + a.cost[:, 1] * chars, 0.0)
        fam = float(np.max(self._anchors @ x)) if len(self._anchors) else 1.0
        return Prediction(
            quality={m: float(q[i]) for i, m in enumerate(self.models)},
            cost_usd={m: float(cost[i]) for i, m in enumerate(self.models)},
            familiarity=fam,
            familiar=fam >= a.familiarity_floor,
        )

    def cost_weight_for(self, quality_target: float) -> float:
        return weight_for(self.artefact.calibration, quality_target)

    def knows(self, model: str) -> bool:
        return model in self._index


def choose(
    pred: Prediction,
    candidates: list[str],
    *,
    cost_weight: float = 0.0,
    max_cost_usd: float | None = None,
) -> Choice | None:
    """The model for this prediction among ``candidates`` (names the prediction knows); None
    when there is none."""
    known = [m for m in candidates if m in pred.quality]
    if not known:
        return None
    costs, q = pred.cost_usd, pred.quality
    if max_cost_usd is not None:
        fits = [m for m in known if costs[m] <= max_cost_usd]
        if not fits:
            cheapest = min(known, key=lambda m: costs[m])
            return Choice(cheapest, f"learned: none under ${max_cost_usd:g}, cheapest")
        best = max(fits, key=lambda m: (q[m], -costs[m]))
        return Choice(best, f"learned q={q[best]:.2f} cost<=${max_cost_usd:g}")
    pick = max(known, key=lambda m: (q[m] - cost_weight * costs[m], -costs[m]))
    return Choice(pick, f"learned q={q[pick]:.2f} w={cost_weight:.3g}")
