"""The S3 DID source against moto over real HTTP: one object of each type, a prefix of
several, and the errors a user can act on."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bsky_backfill.cloud.aws import AwsTarget
from bsky_backfill.errors import ConfigError, StorageAccessDenied, StorageMissing
from bsky_backfill.sources.s3 import is_object_uri, read_s3_dids
from tests.support.moto import Moto

DIDS = [f"did:plc:{i:024d}" for i in range(5)]


def parquet_bytes(column: str, values: list[str]) -> bytes:
    body = io.BytesIO()
    pq.write_table(pa.table({column: values, "other": list(range(len(values)))}), body)
    return body.getvalue()


def put(aws: Moto, key: str, body: bytes | str) -> None:
    data = body.encode() if isinstance(body, str) else body
    aws.client("s3").put_object(Bucket="lists", Key=key, Body=data)


def read(aws: Moto, uri: str, column: str = "did") -> list[str]:
    return list(read_s3_dids(uri, column, AwsTarget(endpoint_url=aws.url)))


@pytest.fixture
def lists(aws: Moto) -> Moto:
    aws.bucket("lists")
    return aws


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("dids.txt", "# study users\n" + "\n".join(DIDS) + "\n\n"),
        ("dids.csv", "handle,did\n" + "".join(f"h{i},{d}\n" for i, d in enumerate(DIDS))),
        ("dids.jsonl", "".join(json.dumps({"did": d, "n": 1}) + "\n" for d in DIDS)),
        ("dids.parquet", parquet_bytes("did", DIDS)),
    ],
)
def test_one_object_of_each_type_yields_its_dids(lists: Moto, name: str, body: bytes) -> None:
    put(lists, f"in/{name}", body)
    assert read(lists, f"s3://lists/in/{name}") == DIDS


def test_a_prefix_reads_every_table_object_in_key_order_and_skips_markers(lists: Moto) -> None:
    put(lists, "exports/part-0.csv", "did\n" + "\n".join(DIDS[:2]) + "\n")
    put(lists, "exports/part-1.parquet", parquet_bytes("did", DIDS[2:4]))
    put(lists, "exports/sub/part-2.jsonl", json.dumps({"did": DIDS[4]}) + "\n")
    put(lists, "exports/_SUCCESS", "")
    put(lists, "exports/.hidden.tmp", "not DIDs")
    put(lists, "elsewhere/other.txt", "did:plc:notthis\n")
    assert read(lists, "s3://lists/exports") == DIDS
    assert read(lists, "s3://lists/exports/") == DIDS


def test_a_named_column_is_read_and_a_missing_one_is_named(lists: Moto) -> None:
    put(lists, "a.csv", "author\n" + DIDS[0] + "\n")
    assert read(lists, "s3://lists/a.csv", "author") == DIDS[:1]
    with pytest.raises(ConfigError, match=r"s3://lists/a\.csv has no column 'did'"):
        read(lists, "s3://lists/a.csv")


def test_an_unknown_object_type_under_a_prefix_is_an_error_naming_it(lists: Moto) -> None:
    put(lists, "exports/a.txt", DIDS[0])
    put(lists, "exports/b.xlsx", "binary")
    with pytest.raises(ConfigError, match=r"s3://lists/exports/b\.xlsx has an unknown type"):
        read(lists, "s3://lists/exports")


def test_an_empty_prefix_is_an_error(lists: Moto) -> None:
    with pytest.raises(ConfigError, match="no DID files under s3://lists/nothing/"):
        read(lists, "s3://lists/nothing")


def test_a_bad_jsonl_line_names_the_object_and_line(lists: Moto) -> None:
    put(lists, "x.jsonl", json.dumps({"did": DIDS[0]}) + "\n{oops\n")
    with pytest.raises(ConfigError, match=r"s3://lists/x\.jsonl:2: not JSON"):
        read(lists, "s3://lists/x.jsonl")


def test_a_missing_bucket_or_object_is_named(lists: Moto) -> None:
    with pytest.raises(StorageMissing, match="s3://nobucket"):
        read(lists, "s3://nobucket/dids.txt")
    with pytest.raises(StorageMissing, match=r"s3://lists/absent\.txt"):
        read(lists, "s3://lists/absent.txt")


def test_no_credentials_is_refused_with_how_to_fix_it(
    lists: Moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageAccessDenied, match="AWS_PROFILE"):
        read(lists, "s3://lists/dids.txt")


@pytest.mark.parametrize(
    ("uri", "one_object"),
    [
        ("s3://b/dids.txt", True),
        ("s3://b/x/DIDS.CSV", True),
        ("s3://b/x/d.parquet", True),
        ("s3://b/x", False),
        ("s3://b", False),
        ("s3://b/v1.2", False),
    ],
)
def test_a_uri_names_an_object_only_by_a_table_suffix(uri: str, one_object: bool) -> None:
    assert is_object_uri(uri) is one_object
