"""SqlJobStore's contracts (bsky_backfill.state.protocol), on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bsky_backfill.core.models import DidState, RepoRow
from bsky_backfill.errors import BatchRejected, JobNotFound, StoreError
from bsky_backfill.state import BatchState, JobState, SqlJobStore
from tests.unit.state.conftest import T0, Backend, Clock

JOB = "job-1"
FETCHED = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


def did(i: int) -> str:
    return f"did:plc:{i:024d}"


def complete(
    d: str, *, records: int = 2, rev: str = "3laaaaaaaaa22", pds: str | None = None
) -> RepoRow:
    return RepoRow(
        did=d,
        status=DidState.COMPLETE,
        handle="alice.test",
        pds=pds or "https://pds.one.test",
        rev=rev,
        commit_cid="bafyreib2rxk3rh6kzwq",
        verified="full",
        records=records,
        records_by_collection={"app.bsky.feed.post": records},
        bytes=1234,
        fetched_at=FETCHED,
    )


async def new_job(store: SqlJobStore, dids: list[str], job_id: str = JOB) -> None:
    await store.create_job(job_id, "example", "backfill: {}", "hash-1")
    await store.add_dids(job_id, dids)


async def commit(store: SqlJobStore, rows: list[RepoRow], *, worker: str = "w1") -> str:
    batch = await store.next_batch_id(JOB, worker_id=worker)
    await store.commit_batch(JOB, batch, rows)
    return batch


# --- jobs ------------------------------------------------------------------------------


async def test_job_lifecycle_and_timestamps(store: SqlJobStore, clock: Clock) -> None:
    job = await store.create_job(JOB, "example", "backfill: {}", "hash-1")
    assert (job.state, job.created_at, job.started_at, job.finished_at) == (
        JobState.PENDING,
        T0,
        None,
        None,
    )
    assert await store.create_job(JOB, "example", "backfill: {}", "hash-1") == job
    with pytest.raises(StoreError, match="another config"):
        await store.create_job(JOB, "example", "other", "hash-2")

    clock.advance(10)
    running = await store.set_job_state(JOB, JobState.RUNNING)
    assert running.started_at == T0 + timedelta(seconds=10)
    clock.advance(10)
    assert (await store.set_job_state(JOB, JobState.RUNNING)).started_at == running.started_at
    clock.advance(10)
    done = await store.set_job_state(JOB, JobState.COMPLETED)
    assert done.finished_at == T0 + timedelta(seconds=30)
    clock.advance(10)
    assert (await store.set_job_state(JOB, JobState.COMPLETED)).finished_at == done.finished_at

    clock.advance(10)
    rerun = await store.set_job_state(JOB, JobState.RUNNING)
    assert (rerun.started_at, rerun.finished_at) == (T0 + timedelta(seconds=50), None)
    failed = await store.set_job_state(JOB, JobState.FAILED, error="host down")
    assert (failed.state, failed.error) == (JobState.FAILED, "host down")
    assert await store.get_job(JOB) == failed


async def test_list_and_missing_jobs(store: SqlJobStore, clock: Clock) -> None:
    await store.create_job("b", "second", "", "h")
    clock.advance(1)
    await store.create_job("a", "first", "", "h")
    assert [j.job_id for j in await store.list_jobs()] == ["b", "a"]
    assert await store.get_job("nope") is None
    for call in (
        store.set_job_state("nope", JobState.RUNNING),
        store.add_dids("nope", [did(1)]),
        store.claim("nope", 1, worker_id="w"),
        store.counts("nope"),
        store.recover("nope"),
    ):
        with pytest.raises(JobNotFound):
            await call


# --- DIDs ------------------------------------------------------------------------------


async def test_add_dids_is_idempotent(store: SqlJobStore) -> None:
    await store.create_job(JOB, "example", "", "h")
    assert await store.add_dids(JOB, [did(1), did(2), did(1)]) == 2
    assert await store.add_dids(JOB, [did(2), did(3)]) == 1
    assert await store.add_dids(JOB, []) == 0
    assert (await store.counts(JOB))[DidState.PENDING] == 3
    await store.create_job("other", "example", "", "h")
    assert await store.add_dids("other", [did(1)]) == 1  # jobs are separate


async def test_add_dids_in_chunks(backend: Backend) -> None:
    from dataclasses import replace

    store = await SqlJobStore.open(backend.url, replace(backend.options, chunk_size=7))
    try:
        await store.create_job(JOB, "example", "", "h")
        assert await store.add_dids(JOB, (did(i % 40) for i in range(100))) == 40
        assert (await store.counts(JOB))[DidState.PENDING] == 40
    finally:
        await store.aclose()


async def test_claim_commit_publish_flow(store: SqlJobStore) -> None:
    dids = [did(i) for i in range(5)]
    await new_job(store, dids)
    claims = await store.claim(JOB, 3, worker_id="w1")
    assert [c.attempts for c in claims] == [1, 1, 1]
    counts = await store.counts(JOB)
    assert (counts[DidState.PENDING], counts[DidState.IN_PROGRESS]) == (2, 3)

    batch = await store.next_batch_id(JOB, worker_id="w1")
    rows = [complete(c.did, records=i + 1) for i, c in enumerate(claims)]
    await store.commit_batch(JOB, batch, rows)
    await store.commit_batch(JOB, batch, rows)  # a retried commit is a no-op
    recovery = await store.recover(JOB)
    assert recovery.committed_unpublished == (batch,)
    await store.mark_published(JOB, batch)
    await store.mark_published(JOB, batch)  # idempotent
    recovery = await store.recover(JOB)
    assert (recovery.committed_unpublished, recovery.known_batches) == ((), frozenset({batch}))

    counts = await store.counts(JOB)
    assert (counts[DidState.COMPLETE], counts[DidState.PENDING]) == (3, 2)
    assert await store.records_total(JOB) == 6
    stored = {r.did: r for r in [r async for r in store.repos(JOB)]}
    assert stored == {r.did: r for r in rows}


async def test_batch_ids_are_monotonic_per_job(store: SqlJobStore) -> None:
    await new_job(store, [])
    await store.create_job("other", "x", "", "h")
    ids = [await store.next_batch_id(JOB, worker_id="w") for _ in range(3)]
    assert ids == sorted(set(ids))
    assert len(ids) == 3
    assert await store.next_batch_id("other", worker_id="w") == ids[0]


async def test_commit_rejections(store: SqlJobStore) -> None:
    await new_job(store, [did(i) for i in range(4)])
    claims = await store.claim(JOB, 2, worker_id="w1")
    mine = [complete(c.did) for c in claims]
    batch = await store.next_batch_id(JOB, worker_id="w1")

    with pytest.raises(BatchRejected, match="never issued"):
        await store.commit_batch(JOB, "0000000099", mine)
    with pytest.raises(BatchRejected, match="not a batch id"):
        await store.commit_batch(JOB, "b-1", mine)
    with pytest.raises(BatchRejected, match="never committed"):
        await store.mark_published(JOB, batch)
    with pytest.raises(ValueError, match="twice"):
        await store.commit_batch(JOB, batch, [mine[0], mine[0]])
    with pytest.raises(ValueError, match="not final"):
        await store.commit_batch(JOB, batch, [RepoRow(claims[0].did, DidState.PENDING)])

    # A pending DID, or one held by another worker, rolls the whole batch back.
    other = await store.claim(JOB, 1, worker_id="w2")
    unclaimed = next(
        d for d in (did(i) for i in range(4)) if d not in {c.did for c in claims + other}
    )
    for stranger in (other[0].did, unclaimed):
        with pytest.raises(BatchRejected, match="not held by worker 'w1'"):
            await store.commit_batch(JOB, batch, [*mine, complete(stranger)])
    assert (await store.counts(JOB))[DidState.COMPLETE] == 0

    await store.commit_batch(JOB, batch, mine)
    with pytest.raises(BatchRejected, match="other DIDs"):
        await store.commit_batch(JOB, batch, mine[:1])


async def test_recover_abandons_open_batches_and_releases_claims(store: SqlJobStore) -> None:
    await new_job(store, [did(i) for i in range(6)])
    first = await store.claim(JOB, 2, worker_id="w1")
    committed = await commit(store, [complete(c.did) for c in first])
    published = await commit(store, [])
    await store.mark_published(JOB, published)
    second = await store.claim(JOB, 3, worker_id="w1")
    open_batch = await store.next_batch_id(JOB, worker_id="w1")

    recovery = await store.recover(JOB)
    assert recovery.committed_unpublished == (committed,)
    assert recovery.known_batches == {committed, published}
    assert (recovery.abandoned, recovery.released) == ((open_batch,), 3)
    counts = await store.counts(JOB)
    assert (counts[DidState.PENDING], counts[DidState.IN_PROGRESS]) == (4, 0)

    # A late commit of the abandoned batch (a worker that was presumed dead) is refused.
    with pytest.raises(BatchRejected, match="abandoned"):
        await store.commit_batch(JOB, open_batch, [complete(c.did) for c in second])
    # Attempts survive a recovery: a DID that crashes its worker runs out of retries.
    again = await store.claim(JOB, 10, worker_id="w2")
    assert {c.did: c.attempts for c in again} == {
        d: 2 if d in {c.did for c in second} else 1 for d in (c.did for c in again)
    }
    assert (await store.recover(JOB)).abandoned == ()


async def test_recovering_one_worker_leaves_the_others_claims_and_batches(
    store: SqlJobStore,
) -> None:
    await new_job(store, [did(i) for i in range(6)])
    dead = await store.claim(JOB, 2, worker_id="dead")
    live = await store.claim(JOB, 2, worker_id="live")
    dead_batch = await store.next_batch_id(JOB, worker_id="dead")
    live_batch = await store.next_batch_id(JOB, worker_id="live")

    assert await store.holders(JOB) == ["dead", "live"]
    recovery = await store.recover(JOB, worker_id="dead")
    assert await store.holders(JOB) == ["live"]
    assert (recovery.abandoned, recovery.released) == ((dead_batch,), 2)
    counts = await store.counts(JOB)
    assert (counts[DidState.PENDING], counts[DidState.IN_PROGRESS]) == (4, 2)
    await store.commit_batch(JOB, live_batch, [complete(c.did) for c in live])  # unharmed
    with pytest.raises(BatchRejected, match="abandoned"):
        await store.commit_batch(JOB, dead_batch, [complete(c.did) for c in dead])


async def test_retry_later_by_a_worker_that_lost_its_claim_changes_nothing(
    store: SqlJobStore,
) -> None:
    await new_job(store, [did(1)])
    await store.claim(JOB, 1, worker_id="old")
    await store.recover(JOB, worker_id="old")  # taken back: "old" was presumed dead
    await store.claim(JOB, 1, worker_id="new")
    assert not await store.retry_later(JOB, did(1), "HostUnavailable", "x", worker_id="old")
    assert await store.holders(JOB) == ["new"]
    assert await store.retry_later(JOB, did(1), "HostUnavailable", "x", worker_id="new")
    assert await store.holders(JOB) == []


async def test_unpublished_lists_committed_batches_oldest_first(store: SqlJobStore) -> None:
    await new_job(store, [did(i) for i in range(4)])
    first = await commit(
        store, [complete(c.did) for c in await store.claim(JOB, 2, worker_id="w1")]
    )
    second = await commit(
        store, [complete(c.did) for c in await store.claim(JOB, 2, worker_id="w1")]
    )
    await store.next_batch_id(JOB, worker_id="w1")  # open: not committed, not listed
    assert await store.unpublished(JOB) == [first, second]
    await store.mark_published(JOB, first)
    assert await store.unpublished(JOB) == [second]


async def test_release_returns_the_attempt(store: SqlJobStore) -> None:
    await new_job(store, [did(1), did(2)])
    claims = await store.claim(JOB, 2, worker_id="w1")
    assert await store.release(JOB, [claims[0].did], worker_id="other") == 0
    assert await store.release(JOB, [c.did for c in claims], worker_id="w1") == 2
    assert await store.release(JOB, [c.did for c in claims]) == 0  # already pending
    assert {c.attempts for c in await store.claim(JOB, 2, worker_id="w1")} == {1}


async def test_retry_later_defers_the_claim(store: SqlJobStore, clock: Clock) -> None:
    await new_job(store, [did(1)])
    [claim] = await store.claim(JOB, 1, worker_id="w1")
    later = T0 + timedelta(seconds=60)
    assert await store.retry_later(JOB, claim.did, "HostUnavailable", "503", not_before=later)
    assert await store.claim(JOB, 1, worker_id="w1") == []
    assert await store.pending_hosts(JOB) == {}
    clock.advance(60)
    [again] = await store.claim(JOB, 1, worker_id="w1")
    assert again.attempts == 2


async def test_final_states_outside_batches(store: SqlJobStore) -> None:
    await new_job(store, [did(i) for i in range(4)])
    [a, b] = await store.claim(JOB, 2, worker_id="w1")
    assert await store.fail(JOB, a.did, "BadSignature", "signature does not verify")
    assert not await store.fail(JOB, a.did, "BadSignature", "again")  # final: unchanged
    assert await store.finish_unavailable(JOB, b.did, DidState.TAKENDOWN, "RepoTakendown")
    with pytest.raises(ValueError, match="unavailable"):
        await store.finish_unavailable(JOB, did(2), DidState.FAILED)
    assert await store.add_final(JOB, "did:bad", DidState.INVALID_DID, "not a DID")
    assert await store.add_final(JOB, did(2), DidState.INVALID_DID, "pending -> final")
    assert not await store.add_final(JOB, a.did, DidState.INVALID_DID)  # already final
    with pytest.raises(ValueError, match="not a final"):
        await store.add_final(JOB, did(9), DidState.PENDING)

    counts = await store.counts(JOB)
    assert {s: n for s, n in counts.items() if n} == {
        DidState.FAILED: 1,
        DidState.TAKENDOWN: 1,
        DidState.INVALID_DID: 2,
        DidState.PENDING: 1,
    }
    unbatched = {r.did: r for r in [r async for r in store.repos(JOB, unbatched=True)]}
    assert unbatched[a.did].error == "signature does not verify"
    assert set(unbatched) == {a.did, b.did, "did:bad", did(2)}

    # A batch may carry them, so their rows are published once; then they are batched.
    await commit(store, [RepoRow("did:bad", DidState.INVALID_DID, error="not a DID")])
    assert "did:bad" not in {r.did async for r in store.repos(JOB, unbatched=True)}
    with pytest.raises(BatchRejected):
        await commit(store, [RepoRow("did:bad", DidState.INVALID_DID)])


async def test_identities_hosts_and_unresolved(store: SqlJobStore) -> None:
    await new_job(store, [did(i) for i in range(6)])
    await store.set_identities(
        JOB,
        [
            (did(0), "a.test", "https://pds.one.test"),
            (did(1), None, "https://PDS.one.test/"),
            (did(2), "c.test", "http://pds.two.test:2583"),
        ],
    )
    assert await store.pending_hosts(JOB) == {"pds.one.test": 2, "pds.two.test:2583": 1}
    assert await store.unresolved(JOB, limit=2) == [did(3), did(4)]
    assert await store.unresolved(JOB, limit=10, after=did(4)) == [did(5)]

    claims = await store.claim(JOB, 10, worker_id="w1", host="pds.one.test")
    assert {(c.did, c.handle, c.pds) for c in claims} == {
        (did(0), "a.test", "https://pds.one.test"),
        (did(1), None, "https://PDS.one.test/"),
    }
    await commit(store, [complete(claims[0].did, pds="https://pds.one.test")])
    await store.set_identities(JOB, [(claims[0].did, "moved.test", "https://elsewhere.test")])
    assert (await store.host_counts(JOB)) == {
        "pds.one.test": {DidState.COMPLETE: 1, DidState.IN_PROGRESS: 1},
        "pds.two.test:2583": {DidState.PENDING: 1},
        None: {DidState.PENDING: 3},
    }


async def test_reopen_remembers_the_superseded_batch(store: SqlJobStore) -> None:
    await new_job(store, [did(1), did(2), did(3)])
    claims = await store.claim(JOB, 3, worker_id="w1")
    first = await commit(store, [complete(c.did, rev="3laaaaaaaaa22") for c in claims])
    await store.mark_published(JOB, first)
    revs = {r.did: r.rev async for r in store.repos(JOB)}
    assert set(revs.values()) == {"3laaaaaaaaa22"}

    assert await store.reopen(JOB, [did(1), did(2), "did:plc:unknown"]) == 2
    assert await store.reopen(JOB, [did(1)]) == 0  # pending now: ignored
    claims = await store.claim(JOB, 3, worker_id="w1")
    assert {c.did: (c.attempts, c.superseded_batch_id) for c in claims} == {
        did(1): (1, first),
        did(2): (1, first),
    }
    # Reopened again before its new rows were committed: still the visible (first) batch.
    await store.release(JOB, [did(2)])
    second = await commit(store, [complete(did(1), rev="3lbbbbbbbbb22")])
    assert await store.superseded(JOB, second) == {did(1): first}
    assert await store.superseded(JOB, first) == {}

    assert await store.reopen(JOB, [did(1)]) == 1
    claims = await store.claim(JOB, 5, worker_id="w1")
    assert {c.did: c.superseded_batch_id for c in claims} == {did(1): second, did(2): first}

    # Finalized outside a batch after the reopen: the rows to replace are still known.
    assert await store.fail(JOB, did(2), "HostUnavailable", "503 x3")
    assert await store.superseded_of(JOB, [did(2), did(3), "did:plc:unknown"]) == {did(2): first}


async def test_counts_and_records(store: SqlJobStore) -> None:
    await new_job(store, [did(i) for i in range(10)])
    assert await store.counts(JOB) == dict.fromkeys(DidState, 0) | {DidState.PENDING: 10}
    assert await store.records_total(JOB) == 0
    claims = await store.claim(JOB, 4, worker_id="w1")
    await commit(
        store,
        [
            complete(claims[0].did, records=5),
            complete(claims[1].did, records=7),
            RepoRow(claims[2].did, DidState.NOT_FOUND, error="RepoNotFound"),
            RepoRow(claims[3].did, DidState.FAILED, records=99, error="503 x3"),
        ],
    )
    counts = await store.counts(JOB)
    assert {s: n for s, n in counts.items() if n} == {
        DidState.PENDING: 6,
        DidState.COMPLETE: 2,
        DidState.NOT_FOUND: 1,
        DidState.FAILED: 1,
    }
    assert await store.records_total(JOB) == 12  # complete DIDs only


async def test_repos_pages_through_many(store: SqlJobStore) -> None:
    dids = [did(i) for i in range(2_345)]
    await new_job(store, dids)
    claims = await store.claim(JOB, 3_000, worker_id="w1")
    await commit(store, [complete(c.did) for c in claims])
    assert [r.did async for r in store.repos(JOB)] == sorted(dids)


async def test_batch_state_values_are_stable() -> None:
    # Stored in the database: renaming one is a migration.
    assert [s.value for s in BatchState] == ["open", "committed", "published", "abandoned"]
    assert [s.value for s in JobState] == [
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
