"""The semantic cache's lookup: a prompt close in meaning to a stored one gets the stored answer.

It is one of the cache stage's ``Lookup``s (``pipeline/cache.py``), after the exact one, under the
same rules (temperature 0 unless allowed, complete answers only, ``Cache-Control``), for the
models and features the configuration names (``cache.semantic``).

**What is compared.** Only the last message, a user's, is embedded and compared. Everything
else must match exactly: the call's *partition* is the exact cache's key of the call with that
message's text left out (``exact_key(..., body=...)``): the tenant, the endpoint, the route and
its targets, the data class, the system prompt and every earlier turn, every parameter
(``max_tokens``, ``response_format``, ``seed``...) and the last message's other fields. A
paraphrase under another system prompt, after another conversation, or with another parameter
is a miss; a rephrased question in the same conversation is a hit.

**When it is skipped** (the call is then only looked up exactly): an endpoint other than chat
completions; tools or functions offered; a last message that is not the user's or holds anything
but text (images, audio, files); more than ``max_messages`` messages; a last message longer than
``max_prompt_chars``; a model and feature not named.

**The match.** The nearest stored prompts of the partition (``store/vectors.py``), closest first,
whose cosine is at least ``threshold``, and which pass the second check
(``pipeline/lexical.py``): the first whose answer is still stored is served. Kept: the answer in
an ``AnswerStore`` (namespace ``semantic``) under a digest of the partition and the prompt, the
prompt's embedding in the index, and with Redis a record on the replicas' feed
(``store/semantic_feed.py``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from passerelle.config.cache import ExactCacheConfig, SemanticCacheConfig
from passerelle.errors import StoreError
from passerelle.pipeline.cache import Probe
from passerelle.pipeline.cache_key import exact_key
from passerelle.pipeline.cached import CachedAnswer
from passerelle.pipeline.context import Call
from passerelle.pipeline.embedding import Embedder
from passerelle.pipeline.lexical import conflict, surface
from passerelle.store.answers import AnswerStore, Bounds, LocalAnswers, RedisAnswers
from passerelle.store.records import SavingSource
from passerelle.store.redis import SharedState
from passerelle.store.semantic_feed import Record, RedisFeed
from passerelle.store.vectors import Entry, Vector, VectorIndex

log = logging.getLogger("passerelle.cache")
NAMESPACE = "semantic"
CANDIDATES = 4  # nearest entries looked at, in order, before a miss
SKIP_FIELDS = frozenset({"tools", "functions"})


def prompt_of(call: Call, settings: SemanticCacheConfig) -> str | None:
    """The text compared for ``call``, or None when the semantic path is skipped."""
    if call.endpoint != "chat.completions" or call.native_body is not None:
        return None
    body = call.body
    if any(body.get(f) for f in SKIP_FIELDS):
        return None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or len(messages) > settings.max_messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    text = _text(last.get("content"))
    if not text or len(text) > settings.max_prompt_chars:
        return None
    return text


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content.strip()
    if not isinstance(content, list):
        return None
    parts = []
    for part in content:  # text parts only: an image, audio or file is not compared
        if not isinstance(part, dict) or part.get("type") != "text":
            return None
        text = part.get("text")
        if not isinstance(text, str):
            return None
        parts.append(text)
    return "\n".join(parts).strip()


def partition_of(call: Call, *, per_user: bool) -> str:
    """The exact cache's key of the call with its last message's text left out."""
    messages = call.body["messages"]
    last = {k: v for k, v in messages[-1].items() if k != "content"}
    body = {**call.body, "messages": [*messages[:-1], last]}
    return exact_key(call, per_user=per_user, body=body)


def entry_key(partition: str, prompt: str) -> str:
    return hashlib.sha256(f"{partition}\0{prompt}".encode()).hexdigest()


class SemanticProbe(Probe):
    __slots__ = ("partition", "prompt", "route", "score", "vector")

    def __init__(
        self,
        partition: str,
        prompt: str,
        vector: Vector,
        found: CachedAnswer | None,
        route: Any,
        score: float | None = None,
    ) -> None:
        super().__init__(found)
        self.partition = partition
        self.prompt = prompt
        self.vector = vector
        self.route = route
        self.score = score


class SemanticLookup:
    """See the module's docstring."""

    name = "semantic"
    source = SavingSource.CACHE_SEMANTIC

    def __init__(
        self,
        settings: SemanticCacheConfig,
        embedder: Embedder,
        store: AnswerStore,
        index: VectorIndex,
        feed: RedisFeed | None = None,
        *,
        per_user: bool = False,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.store = store
        self.index = index
        self.feed = feed
        self._models = frozenset(settings.models)
        self._features = frozenset(settings.features)
        self._per_user = per_user

    def applies(self, call: Call) -> bool:
        route = call.route
        if route is None:
            return False
        if route.model not in self._models and call.feature not in self._features:
            return False
        return prompt_of(call, self.settings) is not None

    async def probe(self, call: Call, *, read: bool) -> Probe:
        prompt = prompt_of(call, self.settings)
        assert prompt is not None and call.route is not None
        partition = partition_of(call, per_user=self._per_user)
        vector, candidates = await self.embedder.run(self._candidates, prompt, partition, read)
        for entry, score in candidates:
            raw = await self.store.get(entry.key)
            found = CachedAnswer.loads(raw) if raw is not None else None
            if found is None:  # gone from the store (expired, evicted, flushed)
                self.embedder.submit(self.index.remove, entry.key)
                continue
            call.annotations["semantic_score"] = round(score, 4)
            return SemanticProbe(partition, prompt, vector, found, call.route, score)
        return SemanticProbe(partition, prompt, vector, None, call.route)

    def _candidates(
        self, prompt: str, partition: str, read: bool
    ) -> tuple[Vector, list[tuple[Entry, float]]]:
        """In the encoder's thread: the prompt's embedding and the entries close enough to it
        that pass the second check, closest first."""
        vector = self.embedder.encode(prompt)
        if not read:
            return vector, []
        mine = surface(prompt) if self.settings.lexical_check else None
        found = []
        for entry, score in self.index.nearest(partition, vector, CANDIDATES):
            if score < self.settings.threshold:
                break
            if mine is None or conflict(mine, surface(entry.prompt)) is None:
                found.append((entry, score))
        return vector, found

    async def keep(self, call: Call, probe: Probe, answer: CachedAnswer) -> None:
        assert isinstance(probe, SemanticProbe) and call.route is not None
        partition = probe.partition
        if call.route is not probe.route:  # moved to another model: kept as that model's answer
            partition = partition_of(call, per_user=self._per_user)
        key = entry_key(partition, probe.prompt)
        await self.store.put(key, answer.dumps())
        expires = time.time() + self.settings.ttl_s
        await self.embedder.run(self.index.add, partition, key, probe.vector, probe.prompt, expires)
        if self.feed is not None:
            await self.feed.publish(Record(partition, key, probe.prompt, probe.vector, expires))

    def take(self, record: Record) -> None:
        """A record another replica (or this one) put on the feed: indexed in the encoder's
        thread, like every change to the index."""
        self.embedder.submit(self._take, record)

    def _take(self, record: Record) -> None:
        if record.key in self.index:
            return
        self.index.add(
            record.partition, record.key, record.vector, record.prompt, expires=record.expires
        )

    async def start(self) -> None:
        if self.feed is None:
            return
        try:
            loaded = await self.feed.catch_up(self.take)
            log.info("semantic cache: %d entries loaded from the shared feed", loaded)
        except StoreError as exc:
            log.warning("semantic cache: shared entries not loaded, Redis unreachable: %s", exc)
        self.feed.follow(self.take)

    async def close(self) -> None:
        if self.feed is not None:
            await self.feed.close()
        await self.store.close()
        self.embedder.close()


def semantic_lookup(
    settings: SemanticCacheConfig, exact: ExactCacheConfig, shared: SharedState | None
) -> SemanticLookup:
    """The lookup for the configuration, its encoder loaded (``ConfigError`` without the extra)."""
    from passerelle.pipeline.embedding import load

    embedder = load()
    bounds = Bounds(
        ttl_s=settings.ttl_s, max_entries=settings.max_entries, max_bytes=settings.max_bytes
    )
    index = VectorIndex(embedder.ndim, max_entries=settings.max_entries, ttl_s=settings.ttl_s)
    if shared is None:
        return SemanticLookup(
            settings, embedder, LocalAnswers(bounds), index, per_user=exact.per_user
        )
    store = RedisAnswers(shared, bounds, namespace=NAMESPACE)
    feed = RedisFeed(shared, max_records=settings.max_entries)
    return SemanticLookup(settings, embedder, store, index, feed, per_user=exact.per_user)
