"""The bookkeeping on SQLite: targets, batches opened / acknowledged / abandoned, and the
acknowledged record versions a re-run skips."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bsky_backfill.dispatch.ledger import BatchStatus, SqlDispatchLedger, open_ledger
from bsky_backfill.state.sql.schema import DISPATCH_BATCH_STATES


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SqlDispatchLedger]:
    async with open_ledger(tmp_path / "dispatch.sqlite") as opened:
        yield opened


def test_the_statuses_are_the_schemas() -> None:
    assert tuple(s.value for s in BatchStatus) == DISPATCH_BATCH_STATES


async def test_targets_are_per_dispatch_and_integration(ledger: SqlDispatchLedger) -> None:
    a = await ledger.target("d", "hook")
    assert await ledger.target("d", "hook") == a
    assert len({a, await ledger.target("d", "queue"), await ledger.target("e", "hook")}) == 3


async def test_an_acknowledged_batch_records_each_version(ledger: SqlDispatchLedger) -> None:
    target = await ledger.target("d", "hook")
    first = await ledger.open_batch(target, 2)
    assert await ledger.acknowledged(target, [("at://a", "c1"), ("at://b", "c1")]) == set()
    await ledger.acknowledge(target, first, [("at://a", "c1"), ("at://b", "c1")])
    # the same uri with another cid is another version: not acknowledged
    found = await ledger.acknowledged(
        target, [("at://a", "c1"), ("at://a", "c2"), ("at://b", "c1")]
    )
    assert found == {("at://a", "c1"), ("at://b", "c1")}
    other = await ledger.target("d", "queue")
    assert await ledger.acknowledged(other, [("at://a", "c1")]) == set()
    totals = await ledger.totals(target)
    assert (totals.acknowledged, totals.batches) == (2, {"acknowledged": 1})


async def test_batch_numbers_increase_per_target(ledger: SqlDispatchLedger) -> None:
    target, other = await ledger.target("d", "hook"), await ledger.target("d", "queue")
    assert [await ledger.open_batch(target, 1) for _ in range(3)] == [1, 2, 3]
    assert await ledger.open_batch(other, 1) == 1


async def test_open_batches_are_abandoned_on_the_next_run(tmp_path: Path) -> None:
    path = tmp_path / "dispatch.sqlite"
    async with open_ledger(path) as run:
        target = await run.target("d", "hook")
        done = await run.open_batch(target, 1)
        await run.acknowledge(target, done, [("at://a", "c")])
        await run.open_batch(target, 5)  # the run dies here: sent, never acknowledged
    async with open_ledger(path) as rerun:
        target = await rerun.target("d", "hook")
        assert await rerun.abandon_open(target) == (1, 5)
        assert await rerun.abandon_open(target) == (0, 0)
        totals = await rerun.totals(target)
    assert totals.batches == {"acknowledged": 1, "abandoned": 1}
    assert totals.acknowledged == 1


async def test_acknowledging_twice_keeps_one_row(ledger: SqlDispatchLedger) -> None:
    target = await ledger.target("d", "hook")
    for _ in range(2):
        seq = await ledger.open_batch(target, 1)
        await ledger.acknowledge(target, seq, [("at://a", "c")])
    assert (await ledger.totals(target)).acknowledged == 1


async def test_many_keys_are_looked_up_in_chunks(ledger: SqlDispatchLedger) -> None:
    target = await ledger.target("d", "hook")
    keys = [(f"at://r{i}", "c") for i in range(1_200)]
    seq = await ledger.open_batch(target, len(keys))
    await ledger.acknowledge(target, seq, keys[::2])
    assert await ledger.acknowledged(target, keys) == set(keys[::2])
