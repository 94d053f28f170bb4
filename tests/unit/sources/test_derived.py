from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bsky_backfill.errors import ConfigError
from bsky_backfill.sources.derived import derive_dids

A, B, C, D = (f"did:plc:{c * 24}" for c in "abcd")
# The sink writes one explicit schema; columns that are all null stay strings.
SCHEMA = pa.schema(
    [(name, pa.string()) for name in ("subject_uri", "subject_did", "reply_parent_uri", "record")]
)


def dataset(tmp_path: Path) -> Path:
    """A tiny dataset in the sink's layout: records/collection=<nsid>/part-*.parquet."""
    rows = {
        "app.bsky.feed.like": [
            {
                "subject_uri": f"at://{A}/app.bsky.feed.post/1",
                "subject_did": None,
                "reply_parent_uri": None,
                "record": "{}",
            }
        ],
        "app.bsky.feed.repost": [
            {
                "subject_uri": f"at://{B}/app.bsky.feed.post/2",
                "subject_did": None,
                "reply_parent_uri": None,
                "record": "{}",
            }
        ],
        "app.bsky.feed.post": [
            {
                "subject_uri": None,
                "subject_did": None,
                "reply_parent_uri": f"at://{C}/app.bsky.feed.post/3",
                "record": "{}",
            },
            {
                "subject_uri": None,
                "subject_did": None,
                "reply_parent_uri": None,
                "record": json.dumps(
                    {"embed": {"record": {"record": {"uri": f"at://{D}/app.bsky.feed.post/4"}}}}
                ),
            },
            {
                "subject_uri": None,
                "subject_did": None,
                "reply_parent_uri": None,
                "record": json.dumps(
                    {"embed": {"record": {"uri": f"at://{A}/app.bsky.feed.post/5"}}}
                ),
            },
        ],
        "app.bsky.graph.follow": [
            {"subject_uri": None, "subject_did": D, "reply_parent_uri": None, "record": "{}"}
        ],
    }
    for collection, items in rows.items():
        folder = tmp_path / "records" / f"collection={collection}"
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(items, schema=SCHEMA), folder / "part-1.parquet")
    return tmp_path


@pytest.mark.parametrize(
    ("relations", "expected"),
    [
        (["like"], [A]),
        (["repost"], [B]),
        (["reply"], [C]),
        (["quote"], [D, A]),
        (["follow"], [D]),
        (["like", "repost", "reply", "quote", "follow"], [A, B, C, D]),
    ],
)
def test_each_relation_yields_the_dids_pointed_at_once(
    tmp_path: Path, relations: list, expected: list
) -> None:
    assert list(derive_dids(dataset(tmp_path), relations)) == expected


def test_a_missing_dataset_or_relation_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no dataset"):
        derive_dids(tmp_path, ["like"])
    with pytest.raises(ConfigError, match="relations must be"):
        derive_dids(dataset(tmp_path), ["mention"])  # type: ignore[list-item]
