"""DynamoDbSink against DynamoDB and S3 over real HTTP (a moto server): the exactly-once
protocol as a reader of the tables sees it, oversized items, retries, preflight, manifest.

Run as ``python -m tests.unit.sinks.test_dynamodb ENDPOINT STAGING LOG`` it is the
crash-test child: ``run_job`` over ``crash_plan()``, printing each step before taking it.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from bsky_backfill.cloud.aws import AwsTarget
from bsky_backfill.cloud.s3 import Bucket
from bsky_backfill.core.models import DidState, RepoResult
from bsky_backfill.errors import SinkWriteFailed, StorageMissing, StorageRefused
from bsky_backfill.sinks import dynamodb as dynamodb_module
from bsky_backfill.sinks.dynamodb import ITEM_LIMIT, DynamoDbSink, DynamoTables, item_size
from tests.support.moto import REGION, Moto
from tests.support.sinks import (
    MANIFEST,
    Batch,
    crash_plan,
    dynamodb_items,
    expected,
    first_batch,
    kill_during,
    plan,
    repo_result,
    run_job,
    visible_dynamodb,
)

DONE = DidState.COMPLETE
TABLES = DynamoTables()
NOTHING: tuple[Counter[tuple], Counter[tuple]] = (Counter(), Counter())
FIRST = first_batch()
_deserializer = TypeDeserializer()


def make_sink(url: str, staging: Path, **options: Any) -> DynamoDbSink:
    target = AwsTarget(region=REGION, endpoint_url=url)
    return DynamoDbSink(TABLES, target, job_id="job-1", staging_dir=staging, **options)


@pytest.fixture
def sink(aws: Moto, tmp_path: Path) -> DynamoDbSink:
    sink = make_sink(aws.url, tmp_path / "staging")
    sink.check(create_tables=True)
    return sink


def items(aws: Moto, table: str) -> list[dict[str, Any]]:
    return dynamodb_items(aws.client("dynamodb"), table)


def seen(aws: Moto, job_id: str = "job-1") -> tuple[Counter[tuple], Counter[tuple]]:
    return visible_dynamodb(aws.client("dynamodb"), aws.client("s3"), job_id)


def stage_all(sink: DynamoDbSink, batches: list[Batch]) -> None:
    for batch_id, results, supersedes in batches:
        sink.stage(batch_id, results, supersedes)


# -- the protocol ----------------------------------------------------------------------


def test_stage_then_publish_shows_every_row_once(aws: Moto, sink: DynamoDbSink) -> None:
    stage_all(sink, FIRST)
    sink.publish("b1")
    assert seen(aws) == expected(FIRST)
    assert sum(seen(aws)[0].values()) == 12
    assert sink.staged_batches() == set()


def test_staged_rows_are_invisible_until_published(aws: Moto, sink: DynamoDbSink) -> None:
    stage_all(sink, FIRST)
    assert seen(aws) == NOTHING
    assert sink.staged_batches() == {"b1"}


def test_publish_twice_is_publish_once(aws: Moto, sink: DynamoDbSink) -> None:
    stage_all(sink, FIRST)
    sink.publish("b1")
    sink.publish("b1")
    sink.publish("never-staged")
    assert seen(aws) == expected(FIRST)
    with pytest.raises(ValueError, match="already published"):
        sink.stage("b1", FIRST[0][1])


def test_discard_removes_only_the_staged_batch(aws: Moto, sink: DynamoDbSink) -> None:
    stage_all(sink, FIRST)
    sink.publish("b1")
    sink.stage("b2", plan([("b2", [("did:plc:c", 1, 4, DONE)])])[0][1])
    sink.discard("b2")
    sink.discard("b2")
    sink.discard("b1")
    sink.publish("b2")
    assert sink.staged_batches() == set()
    assert seen(aws) == expected(FIRST)


def test_a_rerun_replaces_each_superseded_dids_rows(aws: Moto, sink: DynamoDbSink) -> None:
    rerun = plan(
        [
            ("b1", [("did:plc:a", 1, 7, DONE), ("did:plc:b", 1, 5, DONE)]),
            ("b2", [("did:plc:a", 2, 3, DONE), ("did:plc:b", 2, 0, DidState.NOT_FOUND)]),
        ]
    )
    stage_all(sink, rerun[:1])
    sink.publish("b1")
    stage_all(sink, rerun[1:])
    sink.publish("b2")
    assert seen(aws) == expected(rerun)
    records, _ = seen(aws)
    assert {r[2] for r in records if r[0] == "did:plc:a"} == {f"3v2k{i:05d}" for i in range(3)}
    assert not any(r[0] == "did:plc:b" for r in records)


def test_jobs_sharing_the_tables_keep_each_others_rows_and_metadata(
    aws: Moto, sink: DynamoDbSink, tmp_path: Path
) -> None:
    """Another job wrote did:plc:a (other records: another window); this job's re-run of
    did:plc:a replaces only its own rows, and each job keeps its own users item."""
    other = DynamoDbSink(
        TABLES, AwsTarget(REGION, aws.url), job_id="job-0", staging_dir=tmp_path / "other"
    )
    theirs = repo_result("did:plc:a", 9, 4)
    other.stage(
        "b1", [replace(theirs, records=tuple(r._replace(job_id="job-0") for r in theirs.records))]
    )
    other.publish("b1")
    before = seen(aws, "job-0")
    rerun = plan([("b1", [("did:plc:a", 1, 7, DONE)]), ("b2", [("did:plc:a", 2, 3, DONE)])])
    stage_all(sink, rerun[:1])
    sink.publish("b1")
    stage_all(sink, rerun[1:])
    sink.publish("b2")
    assert seen(aws) == expected(rerun)
    assert seen(aws, "job-0") == before
    assert sum(before[0].values()) == 4


def test_recovery_publishing_out_of_order_never_resurrects_rows(
    aws: Moto, sink: DynamoDbSink
) -> None:
    """b1 and b2 each supersede did:plc:a's rows (b0's, then b1's); recovery publishes b2
    first: b1 must then neither show its rows of did:plc:a nor delete b2's."""
    batches = plan(
        [
            ("b0", [("did:plc:a", 1, 7, DONE)]),
            ("b1", [("did:plc:a", 2, 5, DONE), ("did:plc:b", 1, 2, DONE)]),
            ("b2", [("did:plc:a", 3, 3, DONE)]),
        ]
    )
    stage_all(sink, batches[:1])
    sink.publish("b0")
    stage_all(sink, batches[1:])
    sink.publish("b2")
    sink.publish("b1")
    assert seen(aws) == expected(batches)
    assert sink.staged_batches() == set()


def test_sigkill_anywhere_then_recovery_gives_exactly_a_clean_runs_rows(
    aws: Moto, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    staging, log = tmp_path / "staging", tmp_path / "committed.log"
    make_sink(aws.url, staging).check(create_tables=True)
    command = [sys.executable, "-m", __name__, aws.url, str(staging), str(log)]
    kills = kill_during(command, ("stage", "publish", "stage", "publish"), rng, env=aws.env)
    sink = make_sink(aws.url, staging)
    run_job(sink, log, crash_plan(), lambda _: None)
    assert seen(aws) == expected(crash_plan()), f"seed {seed}, killed during {kills}"
    assert sink.staged_batches() == set()


# -- items over 400 KB -----------------------------------------------------------------


def with_big_record(did: str, size: int = 450_000) -> RepoResult:
    """``did``'s result whose first record's JSON is ``size`` bytes."""
    result = repo_result(did, n=4)
    padding = "é" * ((size - 11) // 2)  # 2 bytes each in UTF-8
    big = result.records[0]._replace(record=json.dumps({"pad": padding}, ensure_ascii=False))
    return RepoResult(result.repo, (big, *result.records[1:]))


def test_an_oversized_record_goes_to_the_overflow_bucket(aws: Moto, tmp_path: Path) -> None:
    overflow = Bucket(f"s3://{aws.bucket('overflow')}/dyn", AwsTarget(REGION, aws.url))
    sink = make_sink(aws.url, tmp_path / "staging", overflow=overflow)
    sink.check(create_tables=True)
    batches: list[Batch] = [("b1", [with_big_record("did:plc:a")], {})]
    stage_all(sink, batches)
    sink.publish("b1")

    assert seen(aws) == expected(batches)  # the reader follows record_s3_uri
    big = batches[0][1][0].records[0]
    key = f"{big.collection}/{big.rkey}"
    where = f"s3://overflow/dyn/records/did:plc:a/{key}.json"
    (item,) = [i for i in items(aws, TABLES.records) if "record" not in i]
    assert (item["key"], item["record_s3_uri"], item["text"]) == (key, where, big.text)
    (user,) = items(aws, TABLES.users)
    assert user["oversized_records"] == {key: where}
    sink.finish(MANIFEST)
    manifest = json.loads((sink.staging_dir / "manifest.json").read_text())
    assert manifest["oversized_records"] == [{"uri": big.uri, "stored": where}]

    # Superseded by a smaller repo without it: the item and its object go.
    rerun: list[Batch] = [("b2", [repo_result("did:plc:a", 2, 2)], {"did:plc:a": "b1"})]
    stage_all(sink, rerun)
    sink.publish("b2")
    assert seen(aws) == expected(batches + rerun)
    assert list(overflow.objects()) == []


def test_an_oversized_record_without_overflow_is_omitted_and_reported(
    aws: Moto, sink: DynamoDbSink
) -> None:
    batches: list[Batch] = [("b1", [with_big_record("did:plc:a"), repo_result("did:plc:b")], {})]
    stage_all(sink, batches)
    sink.publish("b1")

    big = batches[0][1][0].records[0]
    key = f"{big.collection}/{big.rkey}"
    records, repos = seen(aws)
    wanted_records, wanted_repos = expected(batches)
    assert repos == wanted_repos
    without_big = {k: v for k, v in wanted_records.items() if k[3] != big.uri}
    assert {k: v for k, v in records.items() if k[3] != big.uri} == without_big
    (item,) = [i for i in items(aws, TABLES.records) if i["uri"] == big.uri]
    assert "record" not in item
    assert item["record_omitted"].startswith("the item is about 450")
    assert item["text"] == big.text
    users = {user["did"]: user for user in items(aws, TABLES.users)}
    assert users["did:plc:a"]["oversized_records"] == {key: "omitted"}
    assert "oversized_records" not in users["did:plc:b"]
    sink.finish(MANIFEST)
    manifest = json.loads((sink.staging_dir / "manifest.json").read_text())
    assert manifest["oversized_records"] == [{"uri": big.uri, "stored": "omitted"}]


def test_an_item_dynamodb_refuses_despite_the_estimate_is_handled_the_same_way(
    aws: Moto, sink: DynamoDbSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The estimate said it fits (patched to 0 here), DynamoDB answered ValidationException
    for the whole BatchWriteItem: each item is sent alone, the refused one without record.
    (moto's own limit, 405,000 bytes, is below AWS's 409,600, so this also happens there.)"""
    monkeypatch.setattr(dynamodb_module, "item_size", lambda item: 0)
    batches: list[Batch] = [("b1", [with_big_record("did:plc:a")], {})]
    stage_all(sink, batches)
    sink.publish("b1")
    big = batches[0][1][0].records[0]
    stored = {i["key"]: i for i in items(aws, TABLES.records)}
    assert len(stored) == 4
    assert "record_omitted" in stored[f"{big.collection}/{big.rkey}"]
    (user,) = items(aws, TABLES.users)
    assert user["oversized_records"] == {f"{big.collection}/{big.rkey}": "omitted"}


def test_item_size_counts_utf8_bytes_of_names_and_values() -> None:
    assert item_size({"did": "did:plc:a", "text": "héllo ✨"}) == 3 + 9 + 4 + 10
    assert ITEM_LIMIT == 409_600


# -- retries ---------------------------------------------------------------------------


class Unprocessed:
    """The moto client, except that the first ``times`` BatchWriteItem calls write only
    their first request and hand back the rest as UnprocessedItems, as a throttled
    DynamoDB does. moto never leaves items unprocessed, so only a double can show it."""

    def __init__(self, client: Any, times: int) -> None:
        self.client = client
        self.left = times

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:
        if self.left <= 0:
            return dict(self.client.batch_write_item(RequestItems=RequestItems))
        self.left -= 1
        ((table, requests),) = RequestItems.items()
        self.client.batch_write_item(RequestItems={table: requests[:1]})
        return {"UnprocessedItems": {table: requests[1:]} if requests[1:] else {}}


def test_unprocessed_items_are_sent_again_with_capped_jittered_backoff(
    aws: Moto, tmp_path: Path
) -> None:
    sleeps: list[float] = []
    sink = make_sink(aws.url, tmp_path / "staging", sleep=sleeps.append)
    sink.check(create_tables=True)
    sink._client = Unprocessed(sink._client, times=9)
    batches = plan([("b1", [("did:plc:a", 1, 30, DONE)])])
    stage_all(sink, batches)
    sink.publish("b1")
    assert seen(aws) == expected(batches)
    # All nine in the first chunk's call: before attempt k, up to min(5 s, 50 ms * 2**(k-1)).
    assert len(sleeps) == 9
    assert all(0 <= s <= min(5.0, 0.05 * 2**k) for k, s in enumerate(sleeps))
    assert len(set(sleeps)) == 9  # jittered


def test_items_left_unprocessed_fail_the_publish_which_succeeds_later(
    aws: Moto, tmp_path: Path
) -> None:
    sink = make_sink(aws.url, tmp_path / "staging", sleep=lambda _: None, write_attempts=3)
    sink.check(create_tables=True)
    real = sink._client
    sink._client = Unprocessed(real, times=1000)
    stage_all(sink, FIRST)
    with pytest.raises(SinkWriteFailed, match="unprocessed after 3 attempts") as failure:
        sink.publish("b1")
    assert failure.value.path == "dynamodb:backfill_results"
    assert sink.staged_batches() == {"b1"}
    sink._client = real
    sink.publish("b1")
    assert seen(aws) == expected(FIRST)


class Throttled:
    """The moto client, except that BatchWriteItem fails as when DynamoDB's throttling
    outlasts botocore's own retries (moto does not throttle)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def batch_write_item(self, **_: Any) -> dict[str, Any]:
        error = {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}
        raise ClientError({"Error": error}, "BatchWriteItem")


def test_throttling_that_outlasts_botocore_is_a_retryable_write_failure(
    sink: DynamoDbSink,
) -> None:
    sink._client = Throttled(sink._client)
    stage_all(sink, FIRST)
    with pytest.raises(SinkWriteFailed, match="ProvisionedThroughputExceeded") as failure:
        sink.publish("b1")
    assert failure.value.path == "dynamodb:backfill_results"


# -- preflight -------------------------------------------------------------------------


def test_preflight_names_a_missing_table(aws: Moto, tmp_path: Path) -> None:
    sink = make_sink(aws.url, tmp_path / "staging")
    with pytest.raises(StorageMissing, match="create_tables: true") as failure:
        sink.check()
    assert failure.value.resource == "dynamodb:backfill_results"
    assert "backfill_results" in str(failure.value)


def test_preflight_creates_the_three_tables_on_demand(aws: Moto, tmp_path: Path) -> None:
    make_sink(aws.url, tmp_path / "staging").check(create_tables=True)
    client = aws.client("dynamodb")
    schemas = {}
    for name in client.list_tables()["TableNames"]:
        table = client.describe_table(TableName=name)["Table"]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        schemas[name] = [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]]
    assert schemas == {
        "backfill_results": [("did", "HASH"), ("key", "RANGE")],
        "backfill_user_metadata": [("did", "HASH"), ("job_id", "RANGE")],
        "backfill_metadata": [("job_id", "HASH"), ("finished_at", "RANGE")],
    }
    make_sink(aws.url, tmp_path / "staging").check()  # now they exist
    assert all(items(aws, table) == [] for table in schemas)  # probes deleted


def test_preflight_refuses_a_table_with_other_keys(aws: Moto, tmp_path: Path) -> None:
    aws.client("dynamodb").create_table(
        TableName="backfill_user_metadata",
        KeySchema=[{"AttributeName": "user", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "user", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(StorageRefused, match=r"keys user \(S\); bsky-backfill needs did") as e:
        make_sink(aws.url, tmp_path / "staging").check(create_tables=True)
    assert e.value.resource == "dynamodb:backfill_user_metadata"
    assert not isinstance(e.value, StorageMissing)


def test_preflight_checks_the_overflow_bucket(aws: Moto, tmp_path: Path) -> None:
    overflow = Bucket("s3://no-such-bucket/x", AwsTarget(REGION, aws.url))
    sink = make_sink(aws.url, tmp_path / "staging", overflow=overflow)
    with pytest.raises(StorageMissing) as failure:
        sink.check(create_tables=True)
    assert failure.value.resource == "s3://no-such-bucket"


# -- manifest --------------------------------------------------------------------------


def test_the_manifest_counts_this_jobs_dids_and_goes_into_the_runs_table(
    aws: Moto, sink: DynamoDbSink
) -> None:
    batches = [*FIRST, *plan([("b2", [("did:plc:c", 1, 9, DONE)])])]
    stage_all(sink, batches)
    sink.publish("b1")
    with pytest.raises(ValueError, match="batches staged"):
        sink.finish(MANIFEST)
    sink.publish("b2")
    aws.client("dynamodb").put_item(  # another job's DID in the same table: not counted
        TableName=TABLES.users,
        Item={"did": {"S": "did:plc:x"}, "job_id": {"S": "job-0"}, "status": {"S": "failed"}},
    )

    assert sink.finish(MANIFEST) == "dynamodb:backfill_metadata/job-1"
    local = sink.staging_dir / "manifest.json"
    manifest = json.loads(local.read_text())
    records, _ = expected(batches)
    counts = {
        "repos": 4,
        "repos_by_status": {"complete": 3, "not_found": 1},
        "records": sum(records.values()),
        "records_by_collection": dict(sorted(Counter(r[1] for r in records.elements()).items())),
    }
    assert (manifest["format"], manifest["counts"], manifest["files"]) == ("dynamodb", counts, [])
    assert manifest["tables"] == {
        "records": "backfill_results",
        "users": "backfill_user_metadata",
        "runs": "backfill_metadata",
    }
    assert manifest["oversized_records"] == []
    (run,) = items(aws, TABLES.runs)
    assert (run["job_id"], run["finished_at"]) == ("job-1", "2026-01-02T04:00:00.000000Z")
    assert run["started_at"] == "2026-01-02T03:04:05.000000Z"
    assert run["config_sha256"] == MANIFEST.config_sha256
    assert json.loads(run["manifest"]) == manifest
    assert run["counts"]["records"] == sum(records.values())

    sink.stage("b3", plan([("b3", [("did:plc:d", 1, 2, DONE)])])[0][1])
    assert local.exists()
    sink.publish("b3")
    assert not local.exists()


def _child(argv: list[str]) -> None:
    url, staging, log = argv
    run_job(make_sink(url, Path(staging)), Path(log), crash_plan(), _say)


def _say(step: str) -> None:
    print(step, flush=True)


if __name__ == "__main__":
    _child(sys.argv[1:])
