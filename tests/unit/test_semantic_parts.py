"""The semantic cache's parts on their own: the lexical second check, the vector index, and its
section of the configuration."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from passerelle.config.cache import DEFAULT_THRESHOLD
from passerelle.config.schema import Config
from passerelle.pipeline.lexical import conflict, surface
from passerelle.store import vectors
from passerelle.store.vectors import VectorIndex


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        ("How do I book flights to Paris?", "How do I book flights from Paris?", "opposites"),
        ("What happened before the war?", "What happened after the war?", "opposites"),
        ("What is 15% of 200?", "What is 20% of 200?", "numbers"),
        ("Why is it not raining?", "Why is it raining?", "negation"),
        ("Why don't cats swim?", "Why do cats swim?", "negation"),
        ("Is Java hard to learn?", "Is Python hard to learn?", "names"),
        ("Pourquoi il ne pleut pas ?", "Pourquoi il pleut ?", "negation"),
        ("How do I learn Python?", "what is the best way to learn python", None),
        ("How can I lose weight?", "What's the best way to lose weight?", None),
        ("Where is Paris? Tell me.", "Where is Paris? tell me.", None),  # a sentence's first word
        ("How do I go from Lyon to Paris?", "How to get to Paris from Lyon?", None),
    ],
)
def test_the_lexical_check(a: str, b: str, why: str | None) -> None:
    assert conflict(surface(a), surface(b)) == why
    assert conflict(surface(b), surface(a)) == why


def unit(seed: int, ndim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(ndim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_the_index_finds_the_nearest_within_a_partition_only() -> None:
    index = VectorIndex(8, max_entries=10, ttl_s=60)
    index.add("p", "a", unit(1), "")
    index.add("p", "b", unit(2), "")
    index.add("q", "c", unit(3), "")
    [(first, score), second] = index.nearest("p", unit(1), 2)
    assert (first.key, second[0].key) == ("a", "b") and score == pytest.approx(1.0)
    assert [e.key for e, _ in index.nearest("q", unit(1))] == ["c"]
    assert index.nearest("nowhere", unit(1)) == []


def test_the_index_keeps_its_bounds_and_expiries() -> None:
    now = [0.0]
    index = VectorIndex(8, max_entries=2, ttl_s=10, clock=lambda: now[0])
    for i, key in enumerate("abc"):
        index.add("p", key, unit(i), "")
    assert len(index) == 2 and "a" not in index  # the oldest went first
    now[0] = 11
    assert index.nearest("p", unit(1)) == [] and len(index) == 0  # expired when found
    index.add("p", "d", unit(4), "", expires=5)  # already expired elsewhere: not kept
    assert len(index) == 0 and index.partitions == 0


def test_a_large_partition_moves_to_hnsw_and_still_finds_and_forgets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vectors, "HNSW_FROM", 16)
    index = VectorIndex(8, max_entries=100, ttl_s=60)
    for i in range(40):
        index.add("p", f"k{i}", unit(i), "")
    assert index._partitions["p"].hnsw is not None
    [(found, score)] = index.nearest("p", unit(7), 1)
    assert found.key == "k7" and score == pytest.approx(1.0, abs=1e-2)
    index.remove("k7")
    assert all(e.key != "k7" for e, _ in index.nearest("p", unit(7), 3))
    index.add("p", "k8", unit(99), "")  # replacing an entry under the same key
    assert index.nearest("p", unit(99), 1)[0][0].key == "k8" and len(index) == 39


# --- the configuration ---------------------------------------------------------------------------

MODELS = [{"name": "gpt-4o-mini", "targets": [{"provider": "p", "upstream_model": "m"}]}]
PROVIDERS = [{"name": "p", "kind": "openai", "base_url": "http://127.0.0.1:1/v1"}]


def config(cache: dict[str, Any]) -> Config:
    return Config.model_validate({"providers": PROVIDERS, "models": MODELS, "cache": cache})


def test_the_configuration_as_written_in_the_issue_is_accepted_with_its_defaults() -> None:
    semantic = config(
        {"exact": {"ttl_s": 3600}, "semantic": {"models": ["gpt-4o-mini"]}}
    ).cache.semantic
    assert semantic is not None and semantic.threshold == DEFAULT_THRESHOLD
    assert semantic.lexical_check and semantic.features == []


@pytest.mark.parametrize(
    ("cache", "message"),
    [
        ({"semantic": {"models": ["gpt-4o-mini"]}}, "needs cache.exact"),
        ({"exact": {}, "semantic": {"models": ["gpt-5"]}}, "unknown model 'gpt-5'"),
        (
            {"exact": {"except_models": ["gpt-4o-mini"]}, "semantic": {"models": ["gpt-4o-mini"]}},
            "not cached by cache.exact",
        ),
        ({"exact": {}, "semantic": {"models": [], "treshold": 0.9}}, "treshold"),
        ({"exact": {}, "semantic": {"threshold": 1.5}}, "threshold"),
    ],
)
def test_a_wrong_semantic_section_is_refused_naming_what(
    cache: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        config(cache)
