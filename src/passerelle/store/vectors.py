"""The semantic cache's index: prompts' embeddings by partition, nearest first, in this process.

An entry is a stored prompt's embedding (unit length, so the inner product is the cosine), the
key its answer is kept under (in an ``AnswerStore``, namespace ``semantic``), the prompt (for the
second check, ``pipeline/lexical.py``, made only for a candidate: a prompt's words as sets would
hold more than its vector), and when it expires. Entries live in partitions:
a digest of everything that must match exactly (the tenant, the route and its targets, the data
class, the earlier turns and every parameter, ``pipeline/semantic.py``), so a search only ever
compares prompts whose answers are interchangeable but for the last message.

A small partition is a numpy matrix searched by brute force (tens of microseconds: an HNSW index
costs some 50 KB before its first entry, and most partitions stay small); past
``HNSW_FROM`` entries it moves to a ``usearch`` HNSW index, which finds the nearest of 100,000
entries in about a millisecond (``bench/semantic_cache.py``). ``usearch`` is imported only then,
and only the semantic cache imports this module: without the ``semantic`` extra nothing here is
loaded.

Bounds: at most ``max_entries`` entries over all partitions (the oldest go first) and each
expires ``ttl_s`` after it was stored. With Redis every replica keeps its own index, fed from
the shared entries (``store/semantic_feed.py``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

HNSW_FROM = 512  # entries of one partition past which it is searched through an HNSW index
# candidates looked at when adding to the HNSW graph: with usearch's default (128) 100,000 entries
# took three times as long to build as with 32 here, which still found 97% of noisy queries' own
# entry first (bench/semantic_cache.py measures the lookup at this setting)
EXPANSION_ADD = 48
Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Entry:
    label: int
    partition: str
    key: str  # where the answer is kept
    prompt: str  # what the second check compares (``pipeline/lexical.py``), when it is asked
    expires: float  # on the index's clock


class _Partition:
    __slots__ = ("hnsw", "labels", "matrix", "rows")

    def __init__(self, ndim: int) -> None:
        self.matrix = np.zeros((0, ndim), dtype=np.float32)
        self.labels: list[int] = []
        self.rows: dict[int, int] = {}  # label -> row
        self.hnsw: Any = None

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, label: int, vector: Vector) -> None:
        if self.hnsw is not None:
            self.hnsw.add(label, vector)
            self.rows[label] = -1
            return
        self.rows[label] = len(self.labels)
        self.labels.append(label)
        self.matrix = np.vstack([self.matrix, vector[None, :]])
        if len(self.rows) > HNSW_FROM:
            self._grow()

    def add_many(self, labels: list[int], vectors: Vector) -> None:
        if self.hnsw is None and len(self.rows) + len(labels) <= HNSW_FROM:
            for label, vector in zip(labels, vectors, strict=True):
                self.add(label, vector)
            return
        if self.hnsw is None:
            self._grow()
        self.hnsw.add(np.asarray(labels, dtype=np.uint64), vectors)
        self.rows.update(dict.fromkeys(labels, -1))

    def _grow(self) -> None:
        from usearch.index import Index  # the semantic extra; only for a large partition

        index = Index(
            ndim=self.matrix.shape[1], metric="ip", dtype="f16", expansion_add=EXPANSION_ADD
        )
        index.add(np.asarray(self.labels, dtype=np.uint64), self.matrix)
        self.hnsw = index
        self.matrix = np.zeros((0, self.matrix.shape[1]), dtype=np.float32)
        self.labels = []
        self.rows = dict.fromkeys(self.rows, -1)

    def remove(self, label: int) -> None:
        row = self.rows.pop(label, None)
        if row is None:
            return
        if self.hnsw is not None:
            self.hnsw.remove(label)
            return
        last = len(self.labels) - 1
        if row != last:  # the last row takes the removed one's place
            moved = self.labels[last]
            self.matrix[row] = self.matrix[last]
            self.labels[row] = moved
            self.rows[moved] = row
        self.labels.pop()
        self.matrix = self.matrix[:last]

    def nearest(self, vector: Vector, count: int) -> list[tuple[int, float]]:
        if self.hnsw is not None:
            found = self.hnsw.search(vector, count)
            return [
                (int(k), 1.0 - float(d)) for k, d in zip(found.keys, found.distances, strict=True)
            ]
        if not self.labels:
            return []
        scores = self.matrix @ vector
        order = np.argsort(-scores)[:count]
        return [(self.labels[i], float(scores[i])) for i in order]


class VectorIndex:
    """Nearest stored prompts within a partition; see the module's docstring."""

    def __init__(
        self,
        ndim: int,
        *,
        max_entries: int,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ndim = ndim
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._clock = clock
        self._partitions: dict[str, _Partition] = {}
        self._entries: OrderedDict[int, Entry] = OrderedDict()  # oldest first
        self._by_key: dict[str, int] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._by_key

    @property
    def partitions(self) -> int:
        return len(self._partitions)

    def add(
        self,
        partition: str,
        key: str,
        vector: Vector,
        prompt: str,
        expires: float | None = None,
    ) -> None:
        """Index a stored prompt (replacing the one under the same ``key``); ``expires`` is on
        the index's clock (an entry loaded from another replica keeps its own)."""
        now = self._clock()
        expires = now + self._ttl_s if expires is None else expires
        if expires <= now or self._max_entries < 1:
            return
        if key in self._by_key:
            self.remove(key)
        label = self._next
        self._next += 1
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = _Partition(self._ndim)
        part.add(label, np.asarray(vector, dtype=np.float32))
        self._entries[label] = Entry(label, partition, key, prompt, expires)
        self._by_key[key] = label
        while len(self._entries) > self._max_entries:
            self.remove(next(iter(self._entries.values())).key)
        while self._entries:  # the expired at the old end go now, the others when found
            oldest = next(iter(self._entries.values()))
            if oldest.expires > now:
                break
            self.remove(oldest.key)

    def add_batch(
        self, partition: str, keys: list[str], vectors: Vector, prompts: list[str]
    ) -> None:
        """Index many prompts of one partition at once (an HNSW index builds them in parallel):
        loading a large store, or a benchmark. Each expires ``ttl_s`` from now."""
        for key in keys:
            self.remove(key)
        expires = self._clock() + self._ttl_s
        labels = list(range(self._next, self._next + len(keys)))
        self._next += len(keys)
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = _Partition(self._ndim)
        part.add_many(labels, np.asarray(vectors, dtype=np.float32))
        for label, key, prompt in zip(labels, keys, prompts, strict=True):
            self._entries[label] = Entry(label, partition, key, prompt, expires)
            self._by_key[key] = label
        while len(self._entries) > self._max_entries:
            self.remove(next(iter(self._entries.values())).key)

    def remove(self, key: str) -> None:
        label = self._by_key.pop(key, None)
        if label is None:
            return
        entry = self._entries.pop(label)
        part = self._partitions[entry.partition]
        part.remove(label)
        if not len(part):
            del self._partitions[entry.partition]

    def nearest(self, partition: str, vector: Vector, count: int = 4) -> list[tuple[Entry, float]]:
        """Up to ``count`` live entries of ``partition``, closest first, with their cosine."""
        part = self._partitions.get(partition)
        if part is None:
            return []
        now = self._clock()
        found = []
        for label, score in part.nearest(np.asarray(vector, dtype=np.float32), count):
            entry = self._entries.get(label)
            if entry is None:
                continue
            if entry.expires <= now:
                self.remove(entry.key)
                continue
            found.append((entry, score))
        return found
