"""The engine's acceptance test against the real reference PDS (``shared/realpds``).

Accounts on the real PDS hold posts, likes, reposts, follows and a non-Bluesky
collection, after deletes and updates; beside them a deactivated, a taken-down and a
deleted account, a never-registered DID and malformed ones. The expected dataset is the
server's own word (listRecords, getLatestCommit) filtered by DESIGN.md's window rule,
which is written out here again, independently of ``bsky_backfill.core.select``:
``createdAt`` (RFC 3339, not more than 5 minutes ahead) else the TID record key's moment,
else outside.

The accounts are new ones on the session network (``realpds_accounts`` is left alone);
every test gets its own output folder, and the re-run test its own accounts, since it
writes to them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from bsky_backfill.config import load_config
from bsky_backfill.core.job import JobOutcome, run_job
from tests.support.realpds import Account, PdsClient, RealNetwork, WrittenRecord
from tests.support.realpds_population import FOLLOW, LIKE, POST, PROFILE, REPOST, THING, timestamp

pytestmark = pytest.mark.realpds

OTHER = "com.example.other"  # written, but not asked for: never in the dataset
COLLECTIONS = (POST, LIKE, REPOST, FOLLOW, THING)
# The job's window: start_date "2024-01-01T02:00:00Z", end_date "2024-01-03" (a bare end
# date is included whole). In population minutes (after 2024-01-01T00:00Z): [120, 4320).
START = datetime(2024, 1, 1, 2, tzinfo=UTC)
END = datetime(2024, 1, 4, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(minutes=5)
NEVER_REGISTERED = "did:plc:nobodyhome234567abcdefgh"  # valid did:plc syntax, not in the PLC
MALFORMED = ("not-a-did", "did:plc:too-short!")

CONFIG = """\
backfill:
  name: {name}
  source: {{type: file, path: "{dids}"}}
  record_types: [{collections}]
  time_range: {{start_date: "2024-01-01T02:00:00Z", end_date: "2024-01-03"}}
  identity: {{plc_url: "{plc}"}}
  network: {{allow_private_addresses: true}}
  processing: {{requests_per_second: 50, max_retries: 2, batch_size: 3}}
  storage: {{type: parquet, path: "{out}"}}
  monitoring: {{prometheus_port: 0}}
"""

Key = tuple[str, str, str]  # did, collection, rkey


# --- the window rule, written independently ------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_B32 = "234567abcdefghijklmnopqrstuvwxyz"  # base32-sortable, the TID alphabet
_TID = re.compile(r"[2-7a-j][2-7a-z]{12}")
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})", re.ASCII
)


def tid(moment: datetime) -> str:
    """The TID for ``moment``: 53 bits of microseconds, 10 of clock id (0), 13 base32 chars."""
    value = ((moment - _EPOCH) // timedelta(microseconds=1)) << 10
    return "".join(_B32[(value >> 5 * i) & 31] for i in reversed(range(13)))


def tid_moment(rkey: str) -> datetime | None:
    """The moment a TID record key names; None if the key is not a TID."""
    if _TID.fullmatch(rkey) is None:
        return None
    value = 0
    for char in rkey:
        value = value * 32 + _B32.index(char)
    return _EPOCH + timedelta(microseconds=value >> 10)


def rfc3339(value: object) -> datetime | None:
    """``value`` as an aware UTC datetime if it is an RFC 3339 date-time string, else None."""
    if not isinstance(value, str) or (match := _RFC3339.fullmatch(value)) is None:
        return None
    whole, fraction, zone = match.groups()
    micros = (fraction or "")[:6].ljust(6, "0")
    try:
        moment = datetime.fromisoformat(f"{whole}.{micros}{'+00:00' if zone == 'Z' else zone}")
    except ValueError:
        return None
    return moment.astimezone(UTC)


def moment_of(value: Mapping[str, Any], rkey: str, now: datetime) -> datetime | None:
    """A record's time: a trusted ``createdAt``, else its TID key's moment, else None."""
    created = rfc3339(value.get("createdAt"))
    if created is not None and created <= now + FUTURE_TOLERANCE:
        return created
    return tid_moment(rkey)


def inside(value: Mapping[str, Any], rkey: str, now: datetime) -> bool:
    """True if the record falls in the job's window ``[START, END)``."""
    moment = moment_of(value, rkey, now)
    return moment is not None and START <= moment < END


# --- the accounts ------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Accounts made on the real PDS for one job, and what the job should say of each."""

    accounts: dict[str, Account]  # by short name: ann, ben, cat (complete), deb, eve, fay
    lines: tuple[str, ...]  # the job's DID file, duplicate and malformed lines included
    statuses: dict[str, str]  # expected status per distinct line

    @property
    def complete(self) -> list[str]:
        """The DIDs expected to be fetched: their records are the dataset."""
        return [did for did, status in self.statuses.items() if status == "complete"]


def ref(written: WrittenRecord) -> dict[str, str]:
    """A strong reference (``subject``, ``reply.root``) to a written record."""
    return {"uri": written.uri, "cid": written.cid}


def at(minutes: float) -> str:
    """An RFC 3339 ``createdAt`` ``minutes`` after 2024-01-01T00:00Z (the window: 120-4320)."""
    return timestamp(minutes)


def day2(hours: float) -> datetime:
    """A moment on 2024-01-02 (inside the window)."""
    return datetime(2024, 1, 2, tzinfo=UTC) + timedelta(hours=hours)


def build_world(client: PdsClient, prefix: str) -> World:
    """Make the accounts (handles ``<prefix>-<name>.test``) and their records and edits."""
    names = ("ann", "ben", "cat", "deb", "eve", "fay")
    acc = {name: client.create_account(f"{prefix}-{name}") for name in names}
    ann, ben = acc["ann"], acc["ben"]

    ben_posts = client.apply_creates(
        ben,
        [(POST, None, {"text": f"ben {m}", "createdAt": at(m)}) for m in (150, 2500, 100, 8000)],
    )
    # Ann's posts around both edges of the window, in Z and offset forms.
    created = [at(m) for m in (0, 60, 119.999, 120, 500, 1000, 2000, 3000, 4319.999, 4320, 6000)]
    created += [
        "2024-01-04T01:30:00+02:00",  # 2024-01-03T23:30Z: inside
        "2024-01-01T03:00:00+05:00",  # 2023-12-31T22:00Z: before the start
        "2024-01-03T22:00:00-03:00",  # 2024-01-04T01:00Z: after the end
        "2024-01-02T12:00:00.123456789Z",  # nanoseconds: valid, inside
    ]
    texts = [f"ann post {i} — café ☕ 🦋" if i % 3 == 0 else f"ann post {i}" for i in range(40)]
    posts = client.apply_creates(
        ann, [(POST, None, {"text": texts[i], "createdAt": c}) for i, c in enumerate(created)]
    )
    replies = [
        {
            "text": texts[len(posts) + i],
            "createdAt": at(200 + 700 * i),
            "langs": ["en", "ja"],
            "reply": {"root": ref(posts[0]), "parent": ref(posts[i])},
        }
        for i in range(8)
    ]
    posts += client.apply_creates(ann, [(POST, None, r) for r in replies])
    things: list[tuple[str, dict[str, Any]]] = [
        ("self", {"createdAt": at(600), "note": "createdAt inside, key not a TID"}),
        (tid(day2(1)), {"createdAt": at(5000), "note": "createdAt outside wins over its TID"}),
        (tid(day2(2)), {"note": "no createdAt: its TID, inside"}),
        (tid(datetime(2023, 6, 1, tzinfo=UTC)), {"note": "no createdAt: its TID, outside"}),
        ("no-time", {"note": "no createdAt, key not a TID: outside"}),
        (tid(day2(3)), {"createdAt": "yesterday", "note": "malformed: its TID, inside"}),
        (tid(datetime(2023, 6, 2, tzinfo=UTC)), {"createdAt": "2024-01-02T00:00:00"}),  # no zone
        (tid(day2(4)), {"createdAt": 1704153600, "note": "not a string: its TID"}),
        (tid(day2(5)), {"createdAt": "2999-01-01T00:00:00.000Z", "note": "future: its TID"}),
        (
            tid(day2(6)),
            {
                "createdAt": at(1500),
                "ref": {"$link": posts[1].cid},
                "data": {"$bytes": base64.b64encode(b"\x00\x01\xfe\xff").decode().rstrip("=")},
                "nested": {"deep": [1, -2, {"x": None}], "flag": True},
            },
        ),
        ("a:b~c_d.e-f", {"createdAt": at(700)}),
        ("doomed", {"createdAt": at(800)}),
        ("moves-out", {"createdAt": at(900)}),
        ("moves-in", {"createdAt": at(9000)}),
    ]
    creates: list[tuple[str, str | None, Mapping[str, Any]]] = [
        (THING, rkey, value) for rkey, value in things
    ]
    subjects = posts[:6] + ben_posts
    creates += [
        (LIKE, None, {"subject": ref(s), "createdAt": at(90 * i)}) for i, s in enumerate(subjects)
    ]
    creates += [
        (REPOST, None, {"subject": ref(s), "createdAt": at(1000 * i)})
        for i, s in enumerate(ben_posts)
    ]
    follows = (ben.did, acc["cat"].did, acc["deb"].did, NEVER_REGISTERED)
    creates += [
        (FOLLOW, None, {"subject": d, "createdAt": at(100 + 2000 * i)})
        for i, d in enumerate(follows)
    ]
    creates += [(PROFILE, "self", {"displayName": "Ann"}), (OTHER, None, {"createdAt": at(500)})]
    client.apply_creates(ann, creates)

    # Deletes and updates: the dataset must show only the latest state.
    client.delete_record(ann, POST, posts[5].rkey)  # inside
    client.delete_record(ann, THING, "doomed")
    first_like = next(client.list_records(ann.did, LIKE))
    client.delete_record(ann, LIKE, first_like["uri"].rsplit("/", 1)[1])
    client.put_record(ann, POST, posts[10].rkey, {"text": "ann edited in", "createdAt": at(1234)})
    client.put_record(ann, POST, posts[6].rkey, {"text": "ann edited out", "createdAt": at(7000)})
    client.put_record(ann, THING, "moves-out", {"createdAt": at(9000), "edited": True})
    client.put_record(ann, THING, "moves-in", {"createdAt": at(1000), "edited": True})

    client.apply_creates(
        ben,
        [
            (LIKE, None, {"subject": ref(posts[2]), "createdAt": at(3000)}),
            (REPOST, None, {"subject": ref(posts[4]), "createdAt": at(300)}),
            (FOLLOW, None, {"subject": ann.did, "createdAt": at(400)}),
            (THING, None, {"createdAt": at(2222), "n": 1}),
        ],
    )
    # cat: records, none in the asked-for collections: complete with no rows.
    client.apply_creates(
        acc["cat"],
        [(PROFILE, "self", {"displayName": "Cat"}), (OTHER, None, {"createdAt": at(500)})],
    )
    for name in ("deb", "eve", "fay"):
        client.create_record(acc[name], POST, {"text": f"{name} was here", "createdAt": at(500)})
    client.deactivate_account(acc["deb"])
    client.takedown(acc["eve"].did)
    client.delete_account(acc["fay"].did)

    statuses = {acc[name].did: "complete" for name in ("ann", "ben", "cat")}
    statuses |= {
        acc["deb"].did: "deactivated",
        acc["eve"].did: "takendown",
        acc["fay"].did: "not_found",
        NEVER_REGISTERED: "not_found",
    }
    statuses |= {line: "invalid_did" for line in MALFORMED}
    lines = (*statuses, ann.did, MALFORMED[0])  # two lines twice: still one row each
    return World(acc, lines, statuses)


@pytest.fixture(scope="module")
def world(realpds_client: PdsClient) -> World:
    """The accounts the read-only tests share (nothing writes to them after this)."""
    return build_world(realpds_client, "eng")


# --- the truth, the job, the dataset -------------------------------------------------------


def truth(client: PdsClient, dids: Iterable[str]) -> dict[Key, dict[str, Any]]:
    """What the dataset should hold: listRecords of the asked-for collections, windowed."""
    now = datetime.now(UTC)
    expected: dict[Key, dict[str, Any]] = {}
    for did in dids:
        for (collection, rkey), rec in client.all_records(did).items():
            if collection in COLLECTIONS and inside(rec["value"], rkey, now):
                expected[(did, collection, rkey)] = rec
    return expected


def write_job(folder: Path, world: World, plc: str, name: str = "realpds_acceptance") -> str:
    """Write the DID file into ``folder``; the job's YAML (output in ``folder/out``)."""
    folder.mkdir(parents=True, exist_ok=True)
    dids = folder / "dids.txt"
    dids.write_text("\n".join(world.lines) + "\n")
    collections = ", ".join(COLLECTIONS)
    return CONFIG.format(name=name, dids=dids, collections=collections, plc=plc, out=folder / "out")


def run(text: str) -> JobOutcome:
    """Run (or re-run) the job the YAML ``text`` describes, as ``bsky-backfill run`` does."""
    return asyncio.run(run_job(load_config(text), text))


@dataclass(frozen=True)
class Dataset:
    """A finished dataset as read back: rows sorted by key, and its manifest."""

    root: Path
    records: list[dict[str, Any]]
    repos: list[dict[str, Any]]
    manifest: dict[str, Any]

    @classmethod
    def read(cls, where: str) -> Dataset:
        root = Path(where)
        records = ds.dataset(root / "records", format="parquet", partitioning="hive")
        repos = ds.dataset(root / "repos", format="parquet")
        return cls(
            root,
            sorted(
                records.to_table().to_pylist(), key=lambda r: (r["did"], r["collection"], r["rkey"])
            ),
            sorted(repos.to_table().to_pylist(), key=lambda r: r["did"]),
            json.loads((root / "manifest.json").read_text()),
        )

    @property
    def keys(self) -> Counter[tuple[str, str, str, str]]:
        return Counter((r["did"], r["collection"], r["rkey"], r["cid"]) for r in self.records)

    @property
    def statuses(self) -> dict[str, str]:
        return {r["did"]: r["status"] for r in self.repos}

    def data_files(self) -> set[str]:
        """Every Parquet file under ``records/`` and ``repos/``, relative to the root."""
        return {
            p.relative_to(self.root).as_posix()
            for folder in ("records", "repos")
            for p in (self.root / folder).rglob("*.parquet")
        }


def assert_matches(data: Dataset, expected: Mapping[Key, Mapping[str, Any]], world: World) -> None:
    """Exactly the expected rows (once each) and statuses, and a manifest that says so."""
    assert [k for k, n in data.keys.items() if n > 1] == [], "duplicate record rows"
    repeated = Counter(r["did"] for r in data.repos)
    assert [did for did, n in repeated.items() if n > 1] == [], "duplicate repos rows"
    got = set(data.keys)
    want = {(*key, str(rec["cid"])) for key, rec in expected.items()}
    assert sorted(got - want) == [], "rows that should not be there"
    assert sorted(want - got) == [], "rows missing"
    assert data.statuses == world.statuses

    counts = data.manifest["counts"]
    assert counts["records"] == len(expected)
    assert counts["records_by_collection"] == dict(Counter(c for _, c, _ in expected))
    assert counts["repos"] == len(world.statuses)
    assert counts["repos_by_status"] == dict(Counter(world.statuses.values()))
    listed = {f["path"]: f for f in data.manifest["files"]}
    assert set(listed) == data.data_files()
    for path, entry in listed.items():
        file = data.root / path
        assert pq.read_metadata(file).num_rows == entry["rows"], path
        assert hashlib.sha256(file.read_bytes()).hexdigest() == entry["sha256"], path
    assert sum(f["rows"] for f in listed.values() if f["kind"] == "records") == len(expected)


@dataclass(frozen=True)
class FirstRun:
    """One run of the job over :func:`world`, and the server's records to judge it by."""

    outcome: JobOutcome
    data: Dataset
    expected: dict[Key, dict[str, Any]]
    listed: dict[Key, dict[str, Any]]  # every record of the complete DIDs, per listRecords


@pytest.fixture(scope="module")
def first_run(
    world: World,
    realpds: RealNetwork,
    realpds_client: PdsClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> FirstRun:
    outcome = run(write_job(tmp_path_factory.mktemp("acceptance"), world, realpds.plc_url))
    listed = {
        (did, collection, rkey): rec
        for did in world.complete
        for (collection, rkey), rec in realpds_client.all_records(did).items()
    }
    expected = truth(realpds_client, world.complete)
    return FirstRun(outcome, Dataset.read(outcome.output), expected, listed)


# --- the tests -----------------------------------------------------------------------------


def test_the_accounts_put_records_on_both_sides_of_every_rule(first_run: FirstRun) -> None:
    """The test's own premise: each collection has records kept and records dropped."""
    for collection in COLLECTIONS:
        listed = {k for k in first_run.listed if k[1] == collection}
        kept = {k for k in first_run.expected if k[1] == collection}
        assert kept, collection
        assert listed - kept, collection
    things = {rkey for _, c, rkey in first_run.expected if c == THING}
    assert {tid(day2(2)), tid(day2(3)), tid(day2(4)), tid(day2(5))} <= things  # TID fallback
    assert {"self", "moves-in", "a:b~c_d.e-f"} <= things
    assert not {"no-time", "moves-out", "doomed", tid(day2(1))} & things
    assert any(c == OTHER for _, c, _ in first_run.listed)


def test_rows_statuses_and_manifest_match_the_server(first_run: FirstRun, world: World) -> None:
    assert_matches(first_run.data, first_run.expected, world)
    assert first_run.outcome.counts == dict(Counter(world.statuses.values()))
    assert first_run.outcome.records == len(first_run.expected)
    assert first_run.data.manifest["job_id"] == "realpds_acceptance"


def test_repos_rows_carry_the_servers_commit_and_counts(
    first_run: FirstRun, world: World, realpds: RealNetwork, realpds_client: PdsClient
) -> None:
    repos = {r["did"]: r for r in first_run.data.repos}
    handles = {a.did: a.handle for a in world.accounts.values()}
    for did in world.complete:
        row = repos[did]
        cid, rev = realpds_client.latest_commit(did)
        mine = Counter(c for d, c, _ in first_run.expected if d == did)
        assert (row["commit_cid"], row["rev"]) == (cid, rev), did
        assert row["records"] == sum(mine.values()), did
        assert json.loads(row["records_by_collection"]) == dict(mine), did
        assert row["handle"] == handles[did]
        assert row["pds"].rstrip("/") == realpds.pds_url.rstrip("/")
    for did, status in world.statuses.items():
        if status != "complete":
            assert repos[did]["records"] == 0, did


def test_record_values_equal_the_servers_json(
    first_run: FirstRun, world: World, realpds_client: PdsClient
) -> None:
    repos = {r["did"]: r for r in first_run.data.repos}
    records = first_run.data.records
    now = datetime.now(UTC)
    for row in records:
        did, collection, rkey = key = (row["did"], row["collection"], row["rkey"])
        value = first_run.expected[key]["value"]
        assert json.loads(row["record"]) == value, key
        assert row["uri"] == f"at://{did}/{collection}/{rkey}" == first_run.expected[key]["uri"]
        assert (row["rev"], row["commit_cid"]) == (repos[did]["rev"], repos[did]["commit_cid"])
        created = rfc3339(value.get("createdAt"))
        if created is not None and created <= now + FUTURE_TOLERANCE:
            assert row["created_at"] == created, key
        if collection == POST:
            assert row["text"] == value["text"]
            assert row["reply_parent_uri"] == value.get("reply", {}).get("parent", {}).get("uri")
            assert row["reply_root_uri"] == value.get("reply", {}).get("root", {}).get("uri")
        elif collection in (LIKE, REPOST):
            assert row["subject_uri"] == value["subject"]["uri"]
        elif collection == FOLLOW:
            assert row["subject_did"] == value["subject"]
    # Spelled out against getRecord: a post, and a record with a link and bytes.
    rows = {(r["did"], r["collection"], r["rkey"]): json.loads(r["record"]) for r in records}
    key = next(k for k, v in rows.items() if k[1] == POST and "café" in v["text"])
    served = realpds_client.get_record(*key)["value"]
    assert (rows[key]["text"], rows[key]["createdAt"]) == (served["text"], served["createdAt"])
    key = (world.accounts["ann"].did, THING, tid(day2(6)))
    served = realpds_client.get_record(*key)["value"]
    assert rows[key]["ref"] == served["ref"] == {"$link": served["ref"]["$link"]}
    assert rows[key]["data"] == served["data"] == {"$bytes": "AAH+/w"}


def test_a_second_run_of_the_same_config_changes_nothing(
    world: World, realpds: RealNetwork, realpds_client: PdsClient, tmp_path: Path
) -> None:
    text = write_job(tmp_path, world, realpds.plc_url, name="realpds_resume")
    first = run(text)
    before = Dataset.read(first.output)
    again = run(text)
    after = Dataset.read(again.output)
    assert_matches(after, truth(realpds_client, world.complete), world)
    assert after.records == before.records  # every column, fetched_at included: no re-fetch
    unchanged = [r for r in before.repos if r["status"] == "complete"]
    assert [r for r in after.repos if r["status"] == "complete"] == unchanged
    assert after.manifest["counts"] == before.manifest["counts"]
    assert again.counts == first.counts
    assert again.records == first.records


def test_a_rerun_after_deletes_and_creates_matches_the_new_truth(
    realpds: RealNetwork, realpds_client: PdsClient, tmp_path: Path
) -> None:
    client = realpds_client
    world = build_world(client, "rerun")
    text = write_job(tmp_path, world, realpds.plc_url, name="realpds_rerun")
    first = run(text)
    before = truth(client, world.complete)
    assert_matches(Dataset.read(first.output), before, world)

    ann, ben, cat = (world.accounts[name] for name in ("ann", "ben", "cat"))
    old = truth(client, [ann.did])
    kept_posts = sorted(rkey for _, c, rkey in old if c == POST)
    client.delete_record(ann, POST, kept_posts[0])
    client.delete_record(ann, THING, "self")
    client.put_record(ann, POST, kept_posts[1], {"text": "rewritten", "createdAt": at(1111)})
    client.apply_creates(
        ann,
        [
            (POST, None, {"text": "new inside", "createdAt": at(2345)}),
            (POST, None, {"text": "new outside", "createdAt": at(9999)}),
            (THING, tid(day2(20)), {"note": "new, TID inside"}),
        ],
    )
    liked = next(client.list_records(ann.did, POST))
    client.create_record(
        ben, LIKE, {"subject": {"uri": liked["uri"], "cid": liked["cid"]}, "createdAt": at(321)}
    )
    client.create_record(cat, THING, {"createdAt": at(456), "first": True})  # had no rows

    second = run(text)
    data = Dataset.read(second.output)
    new = truth(client, world.complete)
    assert len(set(new) ^ set(before)) == 6  # the premise: 2 gone, 4 new (and 1 rewritten)
    assert_matches(data, new, world)
    assert (ann.did, POST, kept_posts[0]) not in {k[:3] for k in data.keys}
    assert (ann.did, THING, tid(day2(20))) in {k[:3] for k in data.keys}
