"""The in-process idempotency store is bounded by bytes as well as by entries.

1,000 answers of 129 KB once took 119 MB; now the store keeps what its byte bound allows, the
newest first, and never forgets a key whose first request is still running.
"""

from __future__ import annotations

from passerelle.store.idempotency import LocalIdempotency, StoredAnswer

ANSWER = StoredAnswer(headers={"x-request-id": "req_1"}, body=b"x" * 129_000, chunks=None)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_stored_answers_stay_under_the_byte_bound_newest_kept() -> None:
    store = LocalIdempotency(max_bytes=4 * 1024 * 1024)
    for i in range(1000):
        assert (await store.begin(f"t:k{i}", "d")).state == "new"
        await store.complete(f"t:k{i}", "d", ANSWER)
        assert store.stored_bytes <= 4 * 1024 * 1024
    assert store.stored_bytes > 3 * 1024 * 1024  # the bound is used, not just respected
    assert (await store.begin("t:k999", "d")).state == "replay"
    assert (await store.begin("t:k0", "d")).state == "new"  # the oldest was forgotten


async def test_streamed_answers_count_their_chunks() -> None:
    store = LocalIdempotency(max_bytes=1024 * 1024)
    chunks = [b"y" * 1000] * 500
    for i in range(20):
        await store.begin(f"t:s{i}", "d")
        await store.complete(f"t:s{i}", "d", StoredAnswer(headers={}, body=None, chunks=chunks))
    assert 500_000 <= store.stored_bytes <= 1024 * 1024


async def test_an_answer_over_the_whole_bound_is_not_kept_and_its_key_is_freed() -> None:
    store = LocalIdempotency(max_bytes=100_000)
    await store.begin("t:big", "d")
    await store.complete("t:big", "d", ANSWER)
    assert store.stored_bytes == 0
    assert (await store.begin("t:big", "d")).state == "new"


async def test_keys_in_progress_are_never_forgotten_to_make_room() -> None:
    clock = Clock()
    store = LocalIdempotency(clock, max_bytes=10**9, max_entries=100)
    for i in range(50):
        await store.begin(f"t:p{i}", "d")  # still running
    for i in range(200):
        await store.begin(f"t:k{i}", "d")
        await store.complete(f"t:k{i}", "d", StoredAnswer(headers={}, body=b"{}", chunks=None))
        assert len(store) <= 100
    for i in range(50):
        assert (await store.begin(f"t:p{i}", "d")).state == "pending"
    clock.now += 601  # in-progress claims expire and free their room
    assert (await store.begin("t:p0", "d")).state == "new"


async def test_another_body_under_a_stored_or_running_key_is_a_conflict() -> None:
    digest = "other"
    store = LocalIdempotency()
    await store.begin("t:k", "d")
    await store.complete("t:k", "d", ANSWER)
    assert (await store.begin("t:k", digest)).state == "conflict"
    await store.begin("t:q", "d")
    assert (await store.begin("t:q", digest)).state == "conflict"
