from __future__ import annotations

import pytest

from bsky_backfill.atproto.repo import read_repo
from bsky_backfill.fakenet.population import PopulationSpec
from bsky_backfill.fakenet.world import World


@pytest.fixture
def world() -> World:
    return World(PopulationSpec(seed=1, accounts=60, hosts=3))


def active_with_records(world: World):
    return next(a for a in world if a.status == "active" and a.seed.record_count > 5)


def test_every_account_is_found_by_did_and_by_host(world: World) -> None:
    assert all(world.get(a.did) is a for a in world)
    assert sum(len(world.on_host(h)) for h in range(3)) == len(world)


def test_an_export_verifies_and_holds_the_generated_records(world: World) -> None:
    account = active_with_records(world)
    export = world.export(account)
    with read_repo(export.car, signing_key=account.seed.keypair.did_key, did=account.did) as repo:
        keys = {f"{r.collection}/{r.rkey}" for r in repo.records}
        assert repo.rev == account.rev
    assert keys == set(account.seed.records())


def test_put_and_delete_change_the_records_and_bump_the_rev(world: World) -> None:
    account = active_with_records(world)
    first_rev = account.rev
    victim = next(iter(account.current_records()))
    collection, rkey = victim.split("/")
    rev = world.put_record(account.did, "app.bsky.feed.post", "3l4cqjgbemz2c", {"text": "new"})
    assert rev > first_rev
    world.delete_record(account.did, collection, rkey)
    assert account.rev > rev
    records = account.current_records()
    assert "app.bsky.feed.post/3l4cqjgbemz2c" in records
    assert victim not in records
    with read_repo(world.export(account).car, verify="hashes") as repo:
        assert len(list(repo.records)) == len(records)


def test_blocks_since_names_the_blocks_of_that_rev(world: World) -> None:
    account = active_with_records(world)
    old_rev, old_blocks = account.rev, set(world.export(account).blocks)
    world.put_record(account.did, "app.bsky.feed.like", "3l4cqjgbemz2c", {"subject": "x"})
    assert world.blocks_since(account, old_rev) == old_blocks
    assert world.blocks_since(account, "2222222222222") is None


def test_deleting_a_missing_record_is_a_key_error(world: World) -> None:
    with pytest.raises(KeyError):
        world.delete_record(active_with_records(world).did, "app.bsky.feed.like", "nope")


def test_status_and_host_changes(world: World) -> None:
    account = active_with_records(world)
    world.set_status(account.did, "takendown")
    world.move(account.did, 2)
    assert (account.status, account.host) == ("takendown", 2)
    with pytest.raises(ValueError, match="outside"):
        world.move(account.did, 3)
    with pytest.raises(KeyError):
        world.set_status("did:plc:unknownunknownunknown", "active")


def test_the_export_cache_stays_within_its_budget() -> None:
    world = World(PopulationSpec(seed=2, accounts=40, hosts=2), cache_bytes=50_000)
    for account in world:
        world.export(account)
    assert world._cached <= 50_000 or len(world._cache) == 1
