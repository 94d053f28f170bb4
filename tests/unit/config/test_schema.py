"""The schema: DESIGN.md's defaults, every source and storage kind, normalisation, hash."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from bsky_backfill.config import load_config
from bsky_backfill.config.schema import (
    BackfillConfig,
    DerivedSource,
    DynamoDbStorage,
    FileSource,
    Identity,
    InlineSource,
    JsonlStorage,
    Monitoring,
    Network,
    ParquetStorage,
    PdsSource,
    Processing,
    S3Source,
    S3Storage,
    SqliteSource,
    SqliteStorage,
    SubjectUriFilter,
)
from tests.unit.config.helpers import MINIMAL, only_problem, with_lines


def load(text: str, base_dir: Path) -> BackfillConfig:
    return load_config(text, base_dir=base_dir, environ={})


def test_every_optional_field_has_the_default_design_md_shows(tmp_path: Path) -> None:
    config = load(MINIMAL, tmp_path)
    assert config.name == "study"
    assert config.version == "1.0"
    assert config.record_types == (
        "app.bsky.feed.like",
        "app.bsky.feed.post",
        "app.bsky.feed.repost",
    )
    assert config.time_range.start_date == datetime(2025, 1, 2, tzinfo=UTC)
    assert config.time_range.end_date is None
    assert config.filters.subject_uris is None
    assert config.processing == Processing(
        batch_size=100, max_concurrent_pds=32, requests_per_second=10, max_retries=3
    )
    assert config.identity == Identity(plc_url="https://plc.directory", cache_ttl_seconds=86400)
    assert config.verify == "full"
    assert config.network == Network(allow_private_addresses=False, max_repo_bytes=2147483648)
    assert config.storage == ParquetStorage(type="parquet", path=tmp_path / "data" / "study")
    assert config.monitoring == Monitoring(
        prometheus_port=8000, log_level="INFO", alert_on_failure=True, alert_webhook_url=None
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "{type: file, path: dids.csv}",
            FileSource(type="file", path=Path("/cfg/dids.csv"), column="did"),
        ),
        (
            "{type: file, path: /abs/users.parquet, column: author}",
            FileSource(type="file", path=Path("/abs/users.parquet"), column="author"),
        ),
        (
            "{type: inline, dids: [did:plc:bbb, did:web:example.com, did:plc:bbb]}",
            InlineSource(type="inline", dids=("did:plc:bbb", "did:web:example.com")),
        ),
        (
            "{type: sqlite, path: dids.sqlite}",
            SqliteSource(
                type="sqlite", path=Path("/cfg/dids.sqlite"), query="SELECT did FROM dids"
            ),
        ),
        (
            "{type: sqlite, path: q.db, query: '  WITH x AS (SELECT 1) SELECT did FROM t  '}",
            SqliteSource(
                type="sqlite",
                path=Path("/cfg/q.db"),
                query="WITH x AS (SELECT 1) SELECT did FROM t",
            ),
        ),
        (
            "{type: s3, uri: s3://bucket/in/dids.jsonl, endpoint_url: 'http://minio:9000/'}",
            S3Source(type="s3", uri="s3://bucket/in/dids.jsonl", endpoint_url="http://minio:9000"),
        ),
        (
            "{type: s3, uri: 's3://bucket/exports/', column: author, region: eu-west-1}",
            S3Source(type="s3", uri="s3://bucket/exports", column="author", region="eu-west-1"),
        ),
        (
            "{type: pds, hosts: ['https://b.example/', 'https://a.example', 'https://b.example']}",
            PdsSource(type="pds", hosts=("https://a.example", "https://b.example")),
        ),
        (
            "{type: derived, dataset: ./data/stage1}",
            DerivedSource(
                type="derived",
                dataset=Path("/cfg/data/stage1"),
                relations=("like", "repost", "reply", "quote", "follow"),
            ),
        ),
        (
            "{type: derived, dataset: out, relations: [quote, like, quote]}",
            DerivedSource(type="derived", dataset=Path("/cfg/out"), relations=("like", "quote")),
        ),
    ],
)
def test_each_source_kind_loads_normalised(source: str, expected: object) -> None:
    text = MINIMAL.replace("{type: inline, dids: [did:plc:z72i7hdynmk6r22z27h6tvur]}", source)
    assert load(text, Path("/cfg")).source == expected


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("{type: parquet, path: out}", ParquetStorage(type="parquet", path=Path("/cfg/out"))),
        ("{path: elsewhere}", ParquetStorage(type="parquet", path=Path("/cfg/elsewhere"))),
        ("{type: sqlite}", SqliteStorage(type="sqlite", path=Path("/cfg/data/study"))),
        ("{type: jsonl}", JsonlStorage(type="jsonl", path=Path("/cfg/data/study"))),
        (
            "{type: s3, path: 's3://my-bucket/backfills/'}",
            S3Storage(type="s3", path="s3://my-bucket/backfills", work_dir=Path("/cfg/data/study")),
        ),
        (
            "{type: s3, path: 's3://my-bucket', endpoint_url: 'http://127.0.0.1:5000',"
            " region: eu-west-1, work_dir: w}",
            S3Storage(
                type="s3",
                path="s3://my-bucket",
                endpoint_url="http://127.0.0.1:5000",
                region="eu-west-1",
                work_dir=Path("/cfg/w"),
            ),
        ),
        (
            "{type: dynamodb}",
            DynamoDbStorage(
                type="dynamodb",
                table_name="backfill_results",
                user_metadata_table="backfill_user_metadata",
                run_metadata_table="backfill_metadata",
                region="us-west-2",
                create_tables=False,
                overflow_path=None,
                work_dir=Path("/cfg/data/study"),
            ),
        ),
        (
            "{type: dynamodb, table_name: t.x-1, region: eu-west-1, endpoint_url: 'http://h:8000',"
            " create_tables: true, overflow_path: 's3://big-items/records/'}",
            DynamoDbStorage(
                type="dynamodb",
                table_name="t.x-1",
                region="eu-west-1",
                endpoint_url="http://h:8000",
                create_tables=True,
                overflow_path="s3://big-items/records",
                work_dir=Path("/cfg/data/study"),
            ),
        ),
    ],
)
def test_each_storage_kind_loads_normalised(storage: str, expected: object) -> None:
    assert load(with_lines(f"storage: {storage}"), Path("/cfg")).storage == expected


def test_subject_uri_filter_takes_a_file_or_a_dataset_folder() -> None:
    config = load(with_lines("filters: {subject_uris: {path: liked.parquet}}"), Path("/cfg"))
    assert config.filters.subject_uris == SubjectUriFilter(path=Path("/cfg/liked.parquet"))
    assert config.filters.subject_uris.column == "uri"
    folder = load(
        with_lines("filters: {subject_uris: {path: stage1/records, column: subject_uri}}"),
        Path("/cfg"),
    )
    assert folder.filters.subject_uris == SubjectUriFilter(
        path=Path("/cfg/stage1/records"), column="subject_uri"
    )


def test_paths_resolve_against_the_config_folder_lexically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "configs" / "sub"
    folder.mkdir(parents=True)
    path = folder / "job.yaml"
    path.write_text(
        with_lines(
            """\
            filters: {subject_uris: {path: ../uris.txt}}
            storage: {type: parquet, path: ~/out}
            """
        )
    )
    config = load_config(path, environ={})
    assert config.filters.subject_uris is not None
    assert config.filters.subject_uris.path == tmp_path / "configs" / "uris.txt"
    assert config.storage == ParquetStorage(type="parquet", path=tmp_path / "home" / "out")


def test_lists_that_are_sets_are_sorted_and_deduplicated(tmp_path: Path) -> None:
    text = with_lines(
        "record_types: [app.bsky.graph.follow, app.bsky.feed.post, app.bsky.feed.post]"
    )
    assert load(text, tmp_path).record_types == ("app.bsky.feed.post", "app.bsky.graph.follow")


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    assert load(with_lines("monitoring: {log_level: debug}"), tmp_path).monitoring.log_level == (
        "DEBUG"
    )


def test_requests_per_second_may_be_fractional(tmp_path: Path) -> None:
    text = with_lines("processing: {requests_per_second: 0.5}")
    assert load(text, tmp_path).processing.requests_per_second == 0.5


def test_the_config_is_frozen(tmp_path: Path) -> None:
    config = load(MINIMAL, tmp_path)
    with pytest.raises(ValidationError):
        config.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.processing.batch_size = 5  # type: ignore[misc]
    assert isinstance(config.record_types, tuple)


# --- time window ---------------------------------------------------------------------------


def window(start: str, end: str | None = None) -> str:
    end_line = f', end_date: "{end}"' if end is not None else ""
    return MINIMAL.replace(
        'time_range: {start_date: "2025-01-02"}', f'time_range: {{start_date: "{start}"{end_line}}}'
    )


def test_a_bare_end_date_includes_that_whole_day(tmp_path: Path) -> None:
    time_range = load(window("2025-01-02", "2025-01-31"), tmp_path).time_range
    assert time_range.end_date == datetime(2025, 2, 1, tzinfo=UTC)
    assert time_range.contains(datetime(2025, 1, 31, 23, 59, 59, 999999, tzinfo=UTC))
    assert not time_range.contains(datetime(2025, 2, 1, tzinfo=UTC))
    assert time_range.contains(datetime(2025, 1, 2, tzinfo=UTC))
    assert not time_range.contains(datetime(2025, 1, 1, 23, 59, 59, tzinfo=UTC))


def test_a_datetime_end_is_exclusive_and_offsets_become_utc(tmp_path: Path) -> None:
    time_range = load(
        window("2025-01-02T01:00:00+02:00", "2025-01-31T12:00:00.5Z"), tmp_path
    ).time_range
    assert time_range.start_date == datetime(2025, 1, 1, 23, tzinfo=UTC)
    assert time_range.end_date == datetime(2025, 1, 31, 12, 0, 0, 500000, tzinfo=UTC)
    assert not time_range.contains(time_range.end_date)


def test_the_same_bare_date_twice_is_one_day(tmp_path: Path) -> None:
    time_range = load(window("2025-01-02", "2025-01-02"), tmp_path).time_range
    assert time_range.end_date == datetime(2025, 1, 3, tzinfo=UTC)


def test_no_end_date_means_no_end(tmp_path: Path) -> None:
    time_range = load(window("2025-01-02"), tmp_path).time_range
    assert time_range.contains(datetime(9999, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2025-02-02", "2025-01-02"),
        ("2025-01-02T00:00:00Z", "2025-01-02T00:00:00Z"),
        ("2025-01-02T00:00:00Z", "2025-01-01T23:59:59Z"),
    ],
)
def test_end_must_come_after_start(start: str, end: str) -> None:
    problem = only_problem(window(start, end))
    assert problem.key == "backfill.time_range.end_date"
    assert problem.line == 4
    assert "must be after start_date" in problem.message


# --- private addresses ----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:2582", "http://localhost:80", "http://10.1.2.3"])
def test_a_private_plc_needs_allow_private_addresses(url: str, tmp_path: Path) -> None:
    problem = only_problem(with_lines(f"identity: {{plc_url: '{url}'}}"))
    assert problem.key == "backfill.identity.plc_url"
    assert "allow_private_addresses: true" in problem.message
    allowed = with_lines(
        f"identity: {{plc_url: '{url}'}}\nnetwork: {{allow_private_addresses: true}}"
    )
    assert load(allowed, tmp_path).identity.plc_url == url


def test_a_private_pds_host_needs_allow_private_addresses() -> None:
    text = MINIMAL.replace(
        "{type: inline, dids: [did:plc:z72i7hdynmk6r22z27h6tvur]}",
        "{type: pds, hosts: ['https://pds.example', 'http://[::1]:2583']}",
    )
    problem = only_problem(text)
    assert problem.key == "backfill.source.hosts[0]"  # sorted: http://[::1] comes first
    assert problem.line == 3


# --- redaction and hash ----------------------------------------------------------------------


def test_the_webhook_url_is_redacted_to_its_host(tmp_path: Path) -> None:
    text = with_lines("monitoring: {alert_webhook_url: 'https://hooks.example.com/T0/B1/secret'}")
    config = load(text, tmp_path)
    redacted = config.redacted()["backfill"]["monitoring"]["alert_webhook_url"]
    assert redacted == "https://hooks.example.com/<redacted>"
    assert "secret" not in str(config.redacted())
    assert config.monitoring.alert_webhook_url == "https://hooks.example.com/T0/B1/secret"
    query = load(
        with_lines("monitoring: {alert_webhook_url: 'https://h.example:8443?key=secret'}"), tmp_path
    )
    assert query.redacted()["backfill"]["monitoring"]["alert_webhook_url"] == (
        "https://h.example:8443/<redacted>"
    )


def test_the_redacted_config_loads_back_to_the_same_config(tmp_path: Path) -> None:
    import json

    config = load(with_lines("record_types: [app.bsky.feed.post]"), tmp_path)
    again = load_config(json.dumps(config.redacted()), environ={})
    assert again == config
    assert again.config_hash() == config.config_hash()


def test_the_hash_is_stable_for_equal_configs_and_changes_with_any_field(tmp_path: Path) -> None:
    one = load(with_lines("record_types: [app.bsky.feed.post, app.bsky.feed.like]"), tmp_path)
    reordered = load(
        with_lines(
            """\
            processing: {batch_size: 100}
            record_types: [app.bsky.feed.like, app.bsky.feed.post, app.bsky.feed.like]
            """
        ),
        tmp_path,
    )
    changed = load(
        with_lines(
            """\
            record_types: [app.bsky.feed.post, app.bsky.feed.like]
            processing: {batch_size: 101}
            """
        ),
        tmp_path,
    )
    assert one.config_hash() == reordered.config_hash()
    assert one.config_hash() != changed.config_hash()
    assert one.config_hash().startswith("sha256:")
    assert len(one.config_hash()) == len("sha256:") + 64


def test_a_config_can_be_built_in_python_too(tmp_path: Path) -> None:
    config = BackfillConfig.model_validate(
        {
            "name": "py",
            "source": {"type": "inline", "dids": ["did:plc:z72i7hdynmk6r22z27h6tvur"]},
            "time_range": {"start_date": datetime(2025, 1, 2, tzinfo=UTC)},
        },
        context={"base_dir": tmp_path},
    )
    assert config.storage == ParquetStorage(type="parquet", path=tmp_path / "data" / "py")
