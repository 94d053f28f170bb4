"""Whole jobs with cloud storage, against moto over real HTTP and the simulated network:
DIDs read from S3, the dataset written to S3 (Parquet) and to DynamoDB equal to what the
local Parquet sink writes for the same job, exact after SIGKILLs, and clear refusals."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bsky_backfill.sinks.rows import RECORD_COLUMNS, REPO_COLUMNS
from tests.support.jobs import dids_of, run_cli
from tests.support.moto import Moto
from tests.support.sinks import dynamodb_items, visible, visible_dynamodb, visible_s3

CONFIG = """\
backfill:
  name: it
  source: {source}
  record_types: [app.bsky.feed.post, app.bsky.feed.like, app.bsky.graph.follow]
  time_range: {{start_date: "2024-03-01", end_date: "2025-09-30"}}
  identity: {{plc_url: "{plc}"}}
  network: {{allow_private_addresses: true}}
  processing: {{requests_per_second: 50, max_retries: 5, batch_size: 5}}
  storage: {storage}
  monitoring: {{prometheus_port: 0}}
"""
LOCAL = "{type: parquet, path: ./out}"
# Columns that differ between two runs of the same job: when each repo was fetched.
_RECORD_FETCHED = RECORD_COLUMNS.index("fetched_at")
_REPO_FETCHED = REPO_COLUMNS.index("fetched_at")


def write_job(folder: Path, plc: object, storage: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(CONFIG.format(source=source, plc=plc, storage=storage))
    return path


def without_fetch_times(
    rows: tuple[Counter[tuple], Counter[tuple]],
) -> tuple[Counter[tuple], Counter[tuple]]:
    records, repos = rows
    return (
        Counter({r[:_RECORD_FETCHED] + r[_RECORD_FETCHED + 1 :]: n for r, n in records.items()}),
        Counter({r[:_REPO_FETCHED] + r[_REPO_FETCHED + 1 :]: n for r, n in repos.items()}),
    )


def upload_dids(aws: Moto, dids: list[str]) -> str:
    """The DIDs as a prefix of two objects (CSV and Parquet) plus a marker to skip."""
    aws.bucket("lists")
    s3 = aws.client("s3")
    half = len(dids) // 2
    s3.put_object(Bucket="lists", Key="study/part-0.csv", Body=("did\n" + "\n".join(dids[:half])))
    body = io.BytesIO()
    pq.write_table(pa.table({"did": dids[half:]}), body)
    s3.put_object(Bucket="lists", Key="study/part-1.parquet", Body=body.getvalue())
    s3.put_object(Bucket="lists", Key="study/_SUCCESS", Body=b"")
    return f"{{type: s3, uri: 's3://lists/study/', endpoint_url: '{aws.url}'}}"


@pytest.fixture
def local_dataset(tmp_path: Path, fakenet_process: dict[str, object]) -> Path:
    """The same job written by the local Parquet sink, DIDs from a local file."""
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "dids.txt").write_text("\n".join(dids_of(fakenet_process)) + "\n")
    config = write_job(folder, fakenet_process["plc"], LOCAL, "{type: file, path: dids.txt}")
    assert run_cli(config) == 0
    return folder / "out"


@dataclass(frozen=True)
class CloudOutput:
    """A cloud sink under test: its storage section, how a reader sees its dataset, and
    the manifest it keeps."""

    storage: str
    read: Callable[[Moto], tuple[Counter[tuple], Counter[tuple]]]
    manifest: Callable[[Moto], dict[str, Any]]

    def config(self, aws: Moto) -> str:
        if "s3://" in self.storage:
            aws.bucket("datasets")
        return self.storage.format(url=aws.url)


def _s3_manifest(aws: Moto) -> dict[str, Any]:
    s3 = aws.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="datasets")["Contents"]]
    assert not any("_staging" in key for key in keys)
    body = s3.get_object(Bucket="datasets", Key="backfills/it/manifest.json")["Body"].read()
    manifest: dict[str, Any] = json.loads(body)
    return manifest


def _dynamodb_manifest(aws: Moto) -> dict[str, Any]:
    (run,) = dynamodb_items(aws.client("dynamodb"), "backfill_metadata")
    manifest: dict[str, Any] = json.loads(run["manifest"])
    return manifest


OUTPUTS = {
    "s3": CloudOutput(
        "{{type: s3, path: 's3://datasets/backfills/it', endpoint_url: '{url}'}}",
        lambda aws: visible_s3("s3://datasets/backfills/it", aws.url),
        _s3_manifest,
    ),
    "dynamodb": CloudOutput(
        "{{type: dynamodb, endpoint_url: '{url}', create_tables: true}}",
        lambda aws: visible_dynamodb(aws.client("dynamodb"), aws.client("s3"), "it"),
        _dynamodb_manifest,
    ),
}


def cloud_job(
    output: CloudOutput, tmp_path: Path, aws: Moto, fakenet_process: dict[str, object]
) -> Path:
    """The job's config: DIDs from S3, the dataset to ``output``."""
    source = upload_dids(aws, dids_of(fakenet_process))
    return write_job(tmp_path / "cloud", fakenet_process["plc"], output.config(aws), source)


@pytest.mark.parametrize("kind", sorted(OUTPUTS))
def test_s3_source_to_a_cloud_sink_equals_the_local_parquet_dataset(
    kind: str, tmp_path: Path, aws: Moto, fakenet_process: dict[str, object], local_dataset: Path
) -> None:
    output = OUTPUTS[kind]
    config = cloud_job(output, tmp_path, aws, fakenet_process)
    assert run_cli(config, env=aws.env) == 0
    local = without_fetch_times(visible("parquet", local_dataset))
    assert sum(local[0].values()) > 1000
    assert without_fetch_times(output.read(aws)) == local
    manifest = output.manifest(aws)
    assert manifest["format"] == kind
    assert manifest["counts"]["records"] == sum(local[0].values())
    assert manifest["counts"]["repos"] == sum(local[1].values())


@pytest.mark.parametrize("kind", sorted(OUTPUTS))
def test_sigkill_then_resume_with_a_cloud_sink_gives_the_clean_dataset(
    kind: str, tmp_path: Path, aws: Moto, fakenet_process: dict[str, object], local_dataset: Path
) -> None:
    output = OUTPUTS[kind]
    config = cloud_job(output, tmp_path, aws, fakenet_process)
    rng = random.Random(2)
    kills = sum(
        run_cli(config, kill_after=rng.uniform(0.5, 3.0), env=aws.env) is None for _ in range(6)
    )
    assert run_cli(config, env=aws.env) == 0
    assert kills >= 3
    crashy = output.read(aws)
    assert max(crashy[0].values()) == 1  # no duplicates
    assert without_fetch_times(crashy) == without_fetch_times(visible("parquet", local_dataset))


@pytest.mark.parametrize(
    ("storage", "named"),
    [
        (
            "{{type: s3, path: 's3://no-such-bucket/x', endpoint_url: '{url}'}}",
            "s3://no-such-bucket",
        ),
        (
            "{{type: dynamodb, table_name: absent_table, endpoint_url: '{url}'}}",
            "dynamodb:absent_table",
        ),
    ],
)
def test_a_missing_bucket_or_table_stops_the_job_before_any_work_naming_it(
    tmp_path: Path, aws: Moto, storage: str, named: str
) -> None:
    source = "{type: inline, dids: [did:plc:aaaaaaaaaaaaaaaaaaaaaaaa]}"
    config = write_job(tmp_path, "http://127.0.0.1:9", storage.format(url=aws.url), source)
    assert run_cli(config, env=aws.env) == 1
    log = (tmp_path / "run.log").read_text()
    assert "error: StorageMissing" in log
    assert named in log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("storage", "named"),
    [
        ("{{type: s3, path: 's3://datasets/out', endpoint_url: '{url}'}}", "s3://datasets/out"),
        ("{{type: dynamodb, endpoint_url: '{url}'}}", "backfill_results"),
    ],
)
def test_credentials_that_may_not_write_stop_the_job_naming_what_they_may_not_use(
    tmp_path: Path, read_only_aws: Moto, storage: str, named: str
) -> None:
    source = "{type: inline, dids: [did:plc:aaaaaaaaaaaaaaaaaaaaaaaa]}"
    config = write_job(
        tmp_path, "http://127.0.0.1:9", storage.format(url=read_only_aws.url), source
    )
    assert run_cli(config, env=read_only_aws.env) == 1
    log = (tmp_path / "run.log").read_text()
    assert "error: StorageAccessDenied" in log
    assert named in log
    assert "access denied" in log
    assert "Traceback" not in log
