"""The learned router's artefact: one ``.npz`` file, read without pickle, versioned.

``passerelle router train`` writes it; the gateway loads it once at start-up. The file is a
NumPy ``.npz`` archive (a zip of ``.npy`` arrays) opened with ``allow_pickle=False``, so nothing
in it can run code, whoever wrote it. It holds:

- ``meta``: UTF-8 JSON as ``uint8``: ``format`` (``"passerelle-router"``), ``version`` (1), the
  ``models`` in column order, the ``features`` (``routing/features.py``: hashing and its
  dimension), ``familiarity_floor``, ``ridge_lambda``, ``calibration`` (``routing/calibrate.py``:
  rows of [cost weight, held-out quality share, cost share]), and what it was trained on (rows,
  prompts, time) with its validation scores;
- ``idf``: ``float32[dim]``, the inverse document frequency of each hashed bucket;
- ``weights``: ``float32[dim, models]`` and ``bias``: ``float32[models]``: each model's predicted
  quality is ``bias + x @ weights`` (clipped to 0..1) for a prompt's feature vector ``x``;
- ``cost``: ``float32[models, 2]``: predicted USD per call, ``cost[m, 0] + cost[m, 1] * chars /
  1000`` for a prompt of ``chars`` characters, fitted on the outcomes' ``cost_usd``;
- ``anchors``: ``float16[k, dim]``, unit-length centres of the training prompts: a prompt whose
  best cosine to them is under ``familiarity_floor`` is unlike anything the router learned from,
  and the route serves its default instead.

A file of another format or version, with arrays of the wrong shape or non-finite values, is
refused with a message that says which.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from passerelle.errors import ArtefactError
from passerelle.routing.features import Hashing

FORMAT = "passerelle-router"
VERSION = 1
F32 = npt.NDArray[np.float32]


@dataclass(slots=True)
class Artefact:
    models: list[str]
    hashing: Hashing
    idf: F32
    weights: F32
    bias: F32
    cost: F32
    anchors: npt.NDArray[np.float16]
    familiarity_floor: float
    ridge_lambda: float
    # (cost weight, held-out quality share, cost share), ``routing/calibrate.py``
    calibration: list[list[float]] = field(default_factory=list)
    trained: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "models": self.models,
            "features": self.hashing.as_json(),
            "familiarity_floor": self.familiarity_floor,
            "ridge_lambda": self.ridge_lambda,
            "calibration": self.calibration,
            "trained": self.trained,
        }

    def save(self, path: str | Path) -> None:
        """Write the archive whole to a temporary name, then rename it into place."""
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        meta = np.frombuffer(json.dumps(self.meta(), sort_keys=True).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            meta=meta,
            idf=self.idf,
            weights=self.weights,
            bias=self.bias,
            cost=self.cost,
            anchors=self.anchors,
        )
        tmp.write_bytes(buf.getvalue())
        tmp.replace(target)


def load(path: str | Path) -> Artefact:
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise ArtefactError(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ArtefactError(f"{path}: not a router artefact (.npz without pickle): {exc}") from exc
    missing = {"meta", "idf", "weights", "bias", "cost", "anchors"} - set(arrays)
    if missing:
        raise ArtefactError(f"{path}: missing arrays {sorted(missing)}")
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtefactError(f"{path}: its meta is not JSON: {exc}") from exc
    return _checked(str(path), meta, arrays)


def _checked(path: str, meta: Any, a: dict[str, Any]) -> Artefact:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtefactError(f"{path}: not a {FORMAT} file")
    if meta.get("version") != VERSION:
        raise ArtefactError(
            f"{path}: format version {meta.get('version')!r}; this release reads version "
            f"{VERSION}: train it again with `passerelle router train`"
        )
    models = meta.get("models")
    features = meta.get("features") or {}
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ArtefactError(f"{path}: `models` must be a non-empty list of names")
    dim = features.get("dim")
    if features.get("kind") != "hashed-word-ngrams" or not isinstance(dim, int) or dim < 16:
        raise ArtefactError(f"{path}: unknown features {features!r}")
    m = len(models)
    shapes = {
        "idf": (dim,),
        "weights": (dim, m),
        "bias": (m,),
        "cost": (m, 2),
    }
    for name, shape in shapes.items():
        if a[name].shape != shape:
            raise ArtefactError(f"{path}: `{name}` has shape {a[name].shape}, expected {shape}")
        if not np.all(np.isfinite(a[name])):
            raise ArtefactError(f"{path}: `{name}` holds non-finite values")
    calibration = meta.get("calibration", [])
    if not isinstance(calibration, list) or not all(
        isinstance(c, list) and len(c) == 3 and all(isinstance(v, int | float) for v in c)
        for c in calibration
    ):
        raise ArtefactError(f"{path}: `calibration` must be a list of [weight, quality, cost]")
    anchors = a["anchors"]
    if anchors.ndim != 2 or anchors.shape[1] != dim or not np.all(np.isfinite(anchors)):
        raise ArtefactError(f"{path}: `anchors` must be finite, of shape (k, {dim})")
    return Artefact(
        models=list(models),
        hashing=Hashing(dim=dim, bigrams=bool(features.get("bigrams", True))),
        idf=a["idf"].astype(np.float32),
        weights=a["weights"].astype(np.float32),
        bias=a["bias"].astype(np.float32),
        cost=a["cost"].astype(np.float32),
        anchors=anchors.astype(np.float16),
        familiarity_floor=float(meta.get("familiarity_floor", 0.0)),
        ridge_lambda=float(meta.get("ridge_lambda", 1.0)),
        calibration=[[float(v) for v in c] for c in calibration],
        trained=dict(meta.get("trained") or {}),
    )
