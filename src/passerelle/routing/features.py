"""What the learned router sees of a prompt: hashed word n-grams, weighted and normalised.

A prompt becomes a fixed-size vector without any model to download: its words and word pairs
(lower-cased ``\\w+`` runs) are hashed (CRC-32) into ``dim`` buckets with a sign bit, counted,
damped (``log1p``), weighted by the inverse document frequency learned at training, and scaled to
unit length. Hashing keeps the vocabulary out of the artefact, costs a few microseconds per
hundred words, and, on the benchmarks in ``bench/routing.py``, tells tasks and their difficulty
apart as well as the router needs. Only the first ``HEAD_CHARS`` and last ``TAIL_CHARS``
characters are read: the decision stays well under a millisecond for any prompt length.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

HEAD_CHARS = 4096
TAIL_CHARS = 1024
WORD = re.compile(r"\w+")
Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Hashing:
    """How a prompt is hashed: the artefact records it, so training and serving agree."""

    dim: int = 4096
    bigrams: bool = True

    def as_json(self) -> dict[str, Any]:
        return {"kind": "hashed-word-ngrams", "dim": self.dim, "bigrams": self.bigrams}


def clip(text: str) -> str:
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]


def counts(text: str, hashing: Hashing) -> dict[int, float]:
    """Signed bucket counts of the prompt's words (and word pairs)."""
    words = WORD.findall(clip(text).lower())
    dim = hashing.dim
    out: dict[int, float] = {}
    grams: Iterable[str] = words
    if hashing.bigrams and len(words) > 1:
        grams = [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]
    for gram in grams:
        h = zlib.crc32(gram.encode())
        bucket = h % dim
        out[bucket] = out.get(bucket, 0.0) + (1.0 if h & 0x80000000 else -1.0)
    return out


def vector(text: str, hashing: Hashing, idf: Vector) -> Vector:
    """The unit-length feature vector of one prompt (all zeros for a prompt with no word)."""
    x = np.zeros(hashing.dim, dtype=np.float32)
    for bucket, c in counts(text, hashing).items():
        x[bucket] = math.copysign(math.log1p(abs(c)), c) * idf[bucket]
    norm = float(np.linalg.norm(x))
    if norm > 0:
        x /= norm
    return x


def learn_idf(texts: Iterable[str], hashing: Hashing) -> Vector:
    """Smoothed inverse document frequency of each bucket over the training prompts."""
    df = np.zeros(hashing.dim, dtype=np.float64)
    n = 0
    for text in texts:
        n += 1
        for bucket in counts(text, hashing):
            df[bucket] += 1
    return np.asarray(np.log((1 + n) / (1 + df)) + 1.0, dtype=np.float32)


def matrix(texts: list[str], hashing: Hashing, idf: Vector) -> npt.NDArray[np.float32]:
    out = np.zeros((len(texts), hashing.dim), dtype=np.float32)
    for i, text in enumerate(texts):
        out[i] = vector(text, hashing, idf)
    return out
