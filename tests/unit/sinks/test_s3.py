"""S3ParquetSink against moto over real HTTP: the exactly-once protocol as a reader of the
bucket sees it, crash recovery, multipart uploads, the manifest, and refusals."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from bsky_backfill.cloud.aws import AwsTarget
from bsky_backfill.cloud.s3 import Bucket
from bsky_backfill.core.models import DidState
from bsky_backfill.errors import StorageAccessDenied, StorageMissing
from bsky_backfill.sinks.s3 import S3ParquetSink
from tests.support.moto import Moto
from tests.support.sinks import (
    MANIFEST,
    crash_plan,
    expected,
    first_batch,
    kill_during,
    plan,
    repo_result,
    run_job,
    visible_s3,
)

DONE = DidState.COMPLETE
URI = "s3://datasets/runs/job-1"
FIRST = first_batch()


@pytest.fixture
def sink(aws: Moto) -> S3ParquetSink:
    aws.bucket("datasets")
    return S3ParquetSink(Bucket(URI, AwsTarget(endpoint_url=aws.url)))


def seen(aws: Moto) -> tuple[Counter[tuple], Counter[tuple]]:
    return visible_s3(URI, aws.url)


def keys(aws: Moto) -> list[str]:
    answer = aws.client("s3").list_objects_v2(Bucket="datasets")
    return sorted(item["Key"] for item in answer.get("Contents", []))


def stage_all(sink: S3ParquetSink, batches: list[tuple]) -> None:
    for batch_id, results, supersedes in batches:
        sink.stage(batch_id, results, supersedes)


def test_publish_shows_every_row_once_in_the_local_layout(sink: S3ParquetSink, aws: Moto) -> None:
    stage_all(sink, FIRST)
    assert seen(aws) == (Counter(), Counter())
    assert sink.staged_batches() == {"b1"}
    sink.publish("b1")
    assert seen(aws) == expected(FIRST)
    assert keys(aws) == [
        "runs/job-1/records/collection=app.bsky.feed.like/part-b1.parquet",
        "runs/job-1/records/collection=app.bsky.feed.post/part-b1.parquet",
        "runs/job-1/records/collection=app.bsky.graph.follow/part-b1.parquet",
        "runs/job-1/repos/part-b1.parquet",
    ]
    assert sink.staged_batches() == set()


def test_publish_again_and_publish_unknown_change_nothing(sink: S3ParquetSink, aws: Moto) -> None:
    stage_all(sink, FIRST)
    sink.publish("b1")
    sink.publish("b1")
    sink.publish("never")
    assert seen(aws) == expected(FIRST)


def test_discard_removes_the_staging_and_shows_nothing(sink: S3ParquetSink, aws: Moto) -> None:
    stage_all(sink, FIRST)
    sink.discard("b1")
    assert keys(aws) == []
    assert sink.staged_batches() == set()


def test_staging_again_replaces_the_earlier_staging(sink: S3ParquetSink, aws: Moto) -> None:
    sink.stage("b1", [repo_result("did:plc:a", 1, 9)])
    stage_all(sink, FIRST)
    sink.publish("b1")
    assert seen(aws) == expected(FIRST)


def test_staging_a_published_batch_is_refused(sink: S3ParquetSink) -> None:
    stage_all(sink, FIRST)
    sink.publish("b1")
    with pytest.raises(ValueError, match="already published"):
        stage_all(sink, FIRST)


def test_an_incomplete_staging_is_not_published(sink: S3ParquetSink, aws: Moto) -> None:
    stage_all(sink, FIRST)
    aws.client("s3").delete_object(Bucket="datasets", Key="runs/job-1/_staging/b1/staged.json")
    assert sink.staged_batches() == {"b1"}
    with pytest.raises(ValueError, match="not completely staged"):
        sink.publish("b1")
    sink.discard("b1")
    assert keys(aws) == []


def test_a_rerun_replaces_superseded_rows_and_drops_emptied_files(
    sink: S3ParquetSink, aws: Moto
) -> None:
    batches = [
        *FIRST,
        (
            "b2",
            [repo_result("did:plc:a", 2, 2), repo_result("did:plc:b", 2, 0, DidState.DEACTIVATED)],
            {"did:plc:a": "b1", "did:plc:b": "b1"},
        ),
    ]
    stage_all(sink, batches[:1])
    sink.publish("b1")
    stage_all(sink, batches[1:])
    sink.publish("b2")
    assert seen(aws) == expected(batches)
    # Every record of b1 was superseded: its record files are gone, its repos file stays.
    assert [key for key in keys(aws) if "b1" in key] == ["runs/job-1/repos/part-b1.parquet"]
    assert not any("_staging" in key for key in keys(aws))


def test_supersede_holds_whatever_the_publish_order(sink: S3ParquetSink, aws: Moto) -> None:
    batches = plan(
        [
            ("b1", [("did:plc:a", 1, 7, DONE), ("did:plc:c", 1, 4, DONE)]),
            ("b2", [("did:plc:a", 2, 3, DONE)]),
            ("b3", [("did:plc:c", 2, 0, DidState.NOT_FOUND)]),
        ]
    )
    stage_all(sink, batches)
    sink.publish("b3")
    sink.publish("b2")
    sink.publish("b1")
    assert seen(aws) == expected(batches)


def test_sigkill_anywhere_then_recovery_gives_exactly_a_clean_runs_rows(
    sink: S3ParquetSink, aws: Moto, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    log = tmp_path / "committed.log"
    env = {**aws.env, "BSKY_BACKFILL_TEST_S3": aws.url}
    command = [sys.executable, "-m", "tests.support.sinks", "s3", URI, str(log)]
    phases = ("stage", "publish", "stage", "publish", "publish")
    kills = kill_during(command, phases, rng, env=env, pause=0.15)
    run_job(sink, log, crash_plan(), lambda _: None)
    assert seen(aws) == expected(crash_plan()), f"seed {seed}, killed during {kills}"
    assert sink.staged_batches() == set()


def test_manifest_is_written_last_and_names_every_object_with_its_sha256(
    sink: S3ParquetSink, aws: Moto
) -> None:
    batches = plan([("b1", [("did:plc:a", 1, 7, DONE)]), ("b2", [("did:plc:a", 2, 3, DONE)])])
    stage_all(sink, batches)
    with pytest.raises(ValueError, match="batches staged"):
        sink.finish(MANIFEST)
    sink.publish("b1")
    sink.publish("b2")
    assert sink.finish(MANIFEST) == f"{URI}/manifest.json"
    s3 = aws.client("s3")
    manifest = json.loads(
        s3.get_object(Bucket="datasets", Key="runs/job-1/manifest.json")["Body"].read()
    )
    assert manifest["format"] == "s3"
    assert manifest["counts"]["records"] == 3
    assert manifest["counts"]["repos_by_status"] == {"complete": 1}
    listed = {f["path"] for f in manifest["files"]}
    assert {f"runs/job-1/{p}" for p in listed} == set(keys(aws)) - {"runs/job-1/manifest.json"}
    for entry in manifest["files"]:
        body = s3.get_object(Bucket="datasets", Key=f"runs/job-1/{entry['path']}")["Body"].read()
        assert entry["sha256"] == hashlib.sha256(body).hexdigest()
        assert entry["bytes"] == len(body)
    # The next change hides the manifest until the next finish.
    sink.stage("b3", [repo_result("did:plc:z", 1, 1)])
    sink.publish("b3")
    assert "runs/job-1/manifest.json" not in keys(aws)


def test_large_files_go_up_as_multipart_uploads(aws: Moto) -> None:
    aws.bucket("datasets")
    mb = 1024 * 1024
    bucket = Bucket(
        URI, AwsTarget(endpoint_url=aws.url), multipart_threshold=5 * mb, part_size=5 * mb
    )
    sink = S3ParquetSink(bucket)
    result = repo_result("did:plc:big", 1, 1)
    noise = [
        record._replace(rkey=f"k{i}", record=os.urandom(900).hex())
        for i, record in enumerate(result.records * 7000)
    ]
    big = replace(result, records=tuple(noise))
    sink.stage("b1", [big])
    sink.publish("b1")
    s3 = aws.client("s3")
    answer = s3.list_objects_v2(Bucket="datasets", Prefix="runs/job-1/records/")
    sizes = {item["Key"]: (item["Size"], item["ETag"]) for item in answer["Contents"]}
    assert any(size > 5 * mb and "-" in etag for size, etag in sizes.values()), sizes
    assert sum(seen(aws)[0].values()) == len(noise)


def test_a_missing_bucket_is_named_in_the_preflight(aws: Moto) -> None:
    sink = S3ParquetSink(Bucket("s3://no-such-bucket/x", AwsTarget(endpoint_url=aws.url)))
    with pytest.raises(StorageMissing, match="s3://no-such-bucket") as caught:
        sink.check()
    assert caught.value.resource == "s3://no-such-bucket"


def test_no_credentials_are_refused_with_a_way_to_fix_it(
    aws: Moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.bucket("datasets")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    sink = S3ParquetSink(Bucket(URI, AwsTarget(endpoint_url=aws.url)))
    with pytest.raises(StorageAccessDenied, match="AWS_ACCESS_KEY_ID"):
        sink.check()


def test_credentials_that_may_not_write_are_refused_naming_the_bucket(read_only_aws: Moto) -> None:
    sink = S3ParquetSink(Bucket("s3://datasets/out", AwsTarget(endpoint_url=read_only_aws.url)))
    with pytest.raises(
        StorageAccessDenied, match=r"s3://datasets/out/_preflight/\w+: access denied"
    ):
        sink.check()
