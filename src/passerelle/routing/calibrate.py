"""What a quality target costs: the router's cost weight, calibrated on held-out prompts.

A quality target ("95% of the best model's quality") is a statement about the traffic, not about
one prompt. Per prompt the router picks the model that maximises predicted quality less
``weight × predicted cost``; a weight of 0 always takes the best prediction, a large one the
cheapest model. At training, on the fifth of the prompts held out from the fit, each weight of a
grid is tried against the real scores and costs; the artefact keeps the curve (weight, quality
as a share of the best single model's on those prompts, cost as a share of its cost). At start-up
the gateway takes the largest weight whose held-out quality still meets the route's
``quality_target``: the cheapest routing the evidence says keeps the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
GRID = tuple(10 ** (k / 8) for k in range(-32, 33))  # times 1 / the mean predicted cost


def curve(
    quality: F32,
    cost: F32,
    scores: Sequence[dict[int, float]],
    costs: Sequence[dict[int, float]],
    rows: Sequence[int],
) -> list[tuple[float, float, float]]:
    """(weight, quality share, cost share) for weight 0 and the grid; ``quality`` and ``cost``
    are the predictions for ``rows`` (rows × models), ``scores``/``costs`` the real values per
    model, by prompt index."""
    m = len(scores)
    have = [[j for j in range(m) if i in scores[j]] for i in rows]
    means = [
        (float(np.mean([scores[j][i] for i in rows if i in scores[j]])), j)
        for j in range(m)
        if any(i in scores[j] for i in rows)
    ]
    if not means:
        return []
    best_q, best = max(means)
    best_cost = float(np.mean([costs[best][i] for i in rows if i in costs[best]]))
    scale = float(np.mean(cost)) or 1.0
    out = []
    for w in (0.0, *(g / scale for g in GRID)):
        got, spent = [], []
        for k, i in enumerate(rows):
            if not have[k]:
                continue
            j = max(have[k], key=lambda j: (quality[k, j] - w * cost[k, j], -cost[k, j]))
            got.append(scores[j][i])
            spent.append(costs[j][i])
        q = float(np.mean(got)) / best_q if best_q > 0 else 1.0
        c = float(np.mean(spent)) / best_cost if best_cost > 0 else 0.0
        out.append((w, q, c))
    return out


def weight_for(calibration: Sequence[Sequence[float]], target: float) -> float:
    """The largest weight whose held-out quality share meets ``target``; 0 (the best predicted
    model every time) when none does or there is no curve."""
    ok = [w for w, q, _ in calibration if q >= target]
    return max(ok) if ok else 0.0
