from __future__ import annotations

import gc
import json
from datetime import UTC, datetime

import cbrrr
import pytest

from bsky_backfill.atproto.repo import Repo, read_repo
from bsky_backfill.atproto.syntax import datetime_to_tid
from bsky_backfill.core import select
from bsky_backfill.core.models import RecordRow
from bsky_backfill.core.select import Selection, SelectionCounts, iter_rows, record_moment
from bsky_backfill.errors import MalformedBlock
from bsky_backfill.fakenet.repo_writer import build_repo
from tests.support.native import compiled
from tests.support.repos import DID, KEY

NOW = datetime(2026, 11, 29, tzinfo=UTC)
JAN = datetime(2025, 1, 15, tzinfo=UTC)
TID_JAN = datetime_to_tid(JAN)


@pytest.mark.parametrize(
    ("value", "rkey", "expected"),
    [
        (
            {"createdAt": "2025-01-02T03:04:05.678Z"},
            TID_JAN,
            (datetime(2025, 1, 2, 3, 4, 5, 678000, UTC), None),
        ),
        ({}, TID_JAN, (JAN, "missing")),
        ({"createdAt": "yesterday"}, TID_JAN, (JAN, "malformed")),
        ({"createdAt": 1700000000}, TID_JAN, (JAN, "malformed")),
        ({"createdAt": "2027-01-01T00:00:00Z"}, TID_JAN, (JAN, "future")),
        (
            {"createdAt": "2026-11-29T00:04:00Z"},
            TID_JAN,
            (datetime(2026, 11, 29, 0, 4, tzinfo=UTC), None),
        ),
        ({}, "self", (None, "missing")),
    ],
)
def test_record_moment_follows_the_design_rules(value: dict, rkey: str, expected: tuple) -> None:
    assert record_moment(value.get("createdAt"), rkey, NOW) == expected


RECORDS = {
    f"app.bsky.feed.post/{TID_JAN}": {
        "text": "hi",
        "createdAt": "2025-01-15T00:00:00Z",
        "reply": {"parent": {"uri": "at://p", "cid": "x"}, "root": {"uri": "at://r", "cid": "y"}},
    },
    f"app.bsky.feed.like/{TID_JAN}": {
        "subject": {"uri": "at://liked", "cid": "z"},
        "createdAt": "2024-01-01T00:00:00Z",
    },
    f"app.bsky.graph.follow/{TID_JAN}": {
        "subject": "did:plc:followed",
        "createdAt": "2025-01-20T00:00:00Z",
    },
    "app.bsky.actor.profile/self": {"displayName": "me"},
}


def selected(repo: Repo, selection: Selection, counts: SelectionCounts) -> list[RecordRow]:
    rows = iter_rows(
        repo,
        repo.record_parts(),
        selection,
        pds="https://pds",
        job_id="j",
        fetched_at=NOW,
        counts=counts,
    )
    return list(rows)


def rows_for(selection: Selection) -> tuple[list, SelectionCounts]:
    export = build_repo(DID, RECORDS, rev="3l4cqjgbemz2c", sign=KEY.sign)
    counts = SelectionCounts()
    with read_repo(export.car, signing_key=KEY.did_key) as repo:
        rows = selected(repo, selection, counts)
    return rows, counts


def test_no_selection_keeps_everything_with_convenience_columns() -> None:
    rows, counts = rows_for(Selection())
    by_collection = {r.collection: r for r in rows}
    assert len(rows) == 4
    post = by_collection["app.bsky.feed.post"]
    assert (post.text, post.reply_parent_uri, post.reply_root_uri) == ("hi", "at://p", "at://r")
    assert by_collection["app.bsky.feed.like"].subject_uri == "at://liked"
    assert by_collection["app.bsky.graph.follow"].subject_did == "did:plc:followed"
    assert json.loads(post.record)["text"] == "hi"
    assert post.uri == f"at://{DID}/app.bsky.feed.post/{TID_JAN}"
    assert by_collection["app.bsky.actor.profile"].created_at is None
    assert counts.flags["missing"] == 1


def test_the_window_is_half_open_and_timeless_records_are_counted() -> None:
    rows, counts = rows_for(Selection(start=JAN, end=datetime(2025, 1, 20, tzinfo=UTC)))
    assert [r.collection for r in rows] == ["app.bsky.feed.post"]
    assert counts.outside_window == 2  # the 2024 like; the follow at exactly `end`
    assert counts.no_time == 1  # profile: no createdAt and rkey "self"


def test_collections_and_subject_uris_filter() -> None:
    rows, counts = rows_for(
        Selection(
            collections=frozenset({"app.bsky.feed.like", "app.bsky.feed.post"}),
            subject_uris=frozenset({"at://liked"}),
        )
    )
    assert [r.collection for r in rows] == ["app.bsky.feed.like"]
    assert counts.not_subject == 1


def test_a_record_listed_by_its_own_uri_is_kept() -> None:
    own = f"at://{DID}/app.bsky.graph.follow/{TID_JAN}"
    rows, _ = rows_for(Selection(subject_uris=frozenset({own})))
    assert [r.uri for r in rows] == [own]


def test_rows_are_left_out_of_the_cyclic_gc() -> None:
    compiled()
    rows, _ = rows_for(Selection())
    # Rows hold only strings, datetimes and None: tracked, each collection of an older
    # generation would walk every field of every row a batch holds.
    assert rows
    assert not any(gc.is_tracked(r) for r in rows)


def test_rows_made_without_the_c_module_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    rows, _ = rows_for(Selection())
    monkeypatch.setattr(select, "_new_row", select._tuple_row)
    again, _ = rows_for(Selection())
    assert again == rows
    assert all(type(r) is RecordRow for r in again)


def test_rows_carry_repo_and_job_fields() -> None:
    rows, _ = rows_for(Selection())
    assert {(r.did, r.rev, r.pds, r.job_id, r.fetched_at) for r in rows} == {
        (DID, "3l4cqjgbemz2c", "https://pds", "j", NOW)
    }
    assert all(r.cid.startswith("bafyrei") for r in rows)


def test_a_record_with_a_link_serialises_it_as_link_json() -> None:
    records = {
        f"app.bsky.feed.post/{TID_JAN}": {
            "text": "x",
            "embed": {"ref": cbrrr.CID.cidv1_raw_sha256_32_from(b"i")},
        }
    }
    export = build_repo(DID, records, rev="3l4cqjgbemz2c", sign=KEY.sign)
    with read_repo(export.car, signing_key=KEY.did_key) as repo:
        (row,) = selected(repo, Selection(), SelectionCounts())
    assert json.loads(row.record)["embed"]["ref"] == {
        "$link": cbrrr.CID.cidv1_raw_sha256_32_from(b"i").encode("base32")
    }


def test_a_record_too_deep_to_write_as_json_fails_its_repo_not_the_job() -> None:
    deep: dict = {"createdAt": "2025-01-15T00:00:00Z"}
    for _ in range(998):  # within DAG-CBOR decoding's cap (1001), past JSON encoding's
        deep = {"a": deep}
    deep["$type"] = "app.bsky.feed.post"
    records = {f"app.bsky.feed.post/{TID_JAN}": deep}
    export = build_repo(DID, records, rev="3l4cqjgbemz2c", sign=KEY.sign)
    with (
        read_repo(export.car, signing_key=KEY.did_key) as repo,
        pytest.raises(MalformedBlock, match="nests too deep to be written as JSON"),
    ):
        selected(repo, Selection(), SelectionCounts())
