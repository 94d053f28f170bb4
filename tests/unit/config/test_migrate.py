"""migrate_config: legacy configs of the original code -> the current form, validated."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bsky_backfill.config import load_config, migrate_config
from bsky_backfill.config.migrate import LEGACY_QUEUE_QUERY
from bsky_backfill.config.schema import (
    DynamoDbStorage,
    FileSource,
    ParquetStorage,
    SqliteSource,
    SubjectUriFilter,
)
from bsky_backfill.errors import ConfigError
from bsky_backfill.sources.sqlite import read_did_query

# The two example configs of the original code (services/backfill/.../config/examples/).
STUDY_USERS = """\
backfill:
  name: "backfill_study_users"
  version: "1.0"
  source:
    type: "sqlite"
    path: "scripts/backfill/backfill_study_users.sqlite"
    metadata: str
  plc_storage:
    type: "sqlite"
    path: "scripts/backfill/backfill_study_users_plc.sqlite"
    metadata: str
  record_types:
    - "app.bsky.feed.post"
    - "app.bsky.feed.like"
    - "app.bsky.feed.repost"
    - "app.bsky.graph.follow"
    - "app.bsky.graph.block"
  time_range:
    start_date: "2024-09-28-00:00:00"
    end_date: "2024-12-01-00:00:00"
  sync_storage:
    type: "parquet"
    path: ""  # not required if stored in Parquet. `manage_local_data.py` will manage.
    metadata: ""  # not required if stored in Parquet. `manage_local_data.py` will manage.
    min_timestamp: "2025-05-04-05:01:50"
"""

ENGAGED_POSTS = """\
backfill:
  name: "backfill_posts_liked_by_study_users"
  version: "1.0"
  source:
    type: "sqlite"
    path: "scripts/backfill/backfill_user_dids_engaged_with_by_study_users.sqlite"
    metadata: str
  plc_storage:
    type: "sqlite"
    path: "scripts/backfill/plc_backfill_user_dids_engaged_with_by_study_users.sqlite"
    metadata: str
  record_types:
    - "app.bsky.feed.post"
  time_range:
    start_date: "2024-09-01-00:00:00"
    end_date: "2024-12-01-00:00:00"
  filters:
    record_type: "app.bsky.feed.post"
    subject:
      - uri
    source:
        type: "parquet"
        path: "scripts/backfill/backfill_post_uris_engaged_with_by_study_users.parquet"
        metadata: ""
  sync_storage:
    type: "parquet"
    path: ""
    metadata: ""
    min_timestamp: "2025-05-05-04:46:48"
"""

# The consolidation proposal's own example (seed: "YAML Configuration Schema").
PROPOSAL = """\
backfill:
  name: "example_backfill"
  version: "1.0"
  source:
    type: "sqlite"
    path: "/path/to/sqlite.db"
    query: "SELECT did FROM dids"
  record_types:
    - "app.bsky.feed.post"
    - "app.bsky.feed.like"
    - "app.bsky.feed.repost"
  time_range:
    start_date: "2025-01-02"
    end_date: "2025-02-02"
  processing:
    batch_size: 100
    max_concurrent_pds: 32
    requests_per_second: 10
    max_retries: 3
  storage:
    type: "dynamodb"
    table_name: "backfill_results"
    region: "us-west-2"
  monitoring:
    prometheus_port: 8000
    log_level: "INFO"
    alert_on_failure: true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "old.yaml"
    path.write_text(text)
    return path


def test_the_study_users_config_migrates_to_a_valid_config(tmp_path: Path) -> None:
    migration = migrate_config(write(tmp_path, STUDY_USERS), environ={})
    config = migration.config
    assert config.name == "backfill_study_users"
    assert config.source == SqliteSource(
        type="sqlite",
        path=tmp_path / "scripts/backfill/backfill_study_users.sqlite",
        query=LEGACY_QUEUE_QUERY,
    )
    assert config.record_types == (
        "app.bsky.feed.like",
        "app.bsky.feed.post",
        "app.bsky.feed.repost",
        "app.bsky.graph.block",
        "app.bsky.graph.follow",
    )
    assert config.time_range.start_date == datetime(2024, 9, 28, tzinfo=UTC)
    assert config.time_range.end_date == datetime(2024, 12, 1, tzinfo=UTC)
    assert config.storage == ParquetStorage(
        type="parquet", path=tmp_path / "data" / "backfill_study_users"
    )
    notes = "\n".join(migration.notes)
    for dropped in ("plc_storage", "min_timestamp", "read as UTC", "--project-home"):
        assert dropped in notes
    assert all(f"# - {note}" in migration.text for note in migration.notes)


def test_the_engaged_posts_filter_becomes_subject_uris(tmp_path: Path) -> None:
    config = migrate_config(write(tmp_path, ENGAGED_POSTS), environ={}).config
    assert config.filters.subject_uris == SubjectUriFilter(
        path=tmp_path / "scripts/backfill/backfill_post_uris_engaged_with_by_study_users.parquet",
        column="uri",
    )
    assert config.record_types == ("app.bsky.feed.post",)


def test_the_proposal_example_keeps_its_query_storage_and_settings(tmp_path: Path) -> None:
    migration = migrate_config(write(tmp_path, PROPOSAL), environ={})
    config = migration.config
    assert config.source == SqliteSource(
        type="sqlite", path=Path("/path/to/sqlite.db"), query="SELECT did FROM dids"
    )
    assert isinstance(config.storage, DynamoDbStorage)
    assert (config.storage.table_name, config.storage.region) == ("backfill_results", "us-west-2")
    assert config.time_range.end_date == datetime(2025, 2, 3, tzinfo=UTC)
    assert config.processing.max_concurrent_pds == 32
    assert migration.notes == ()


@pytest.mark.parametrize("legacy", [STUDY_USERS, ENGAGED_POSTS, PROPOSAL])
def test_old_to_new_round_trips_and_migrating_again_changes_nothing(
    tmp_path: Path, legacy: str
) -> None:
    migration = migrate_config(write(tmp_path, legacy), environ={})
    new_path = tmp_path / "new.yaml"
    new_path.write_text(migration.text)
    loaded = load_config(new_path, environ={})
    assert loaded == migration.config
    again = migrate_config(new_path, environ={})
    assert again.config == migration.config


def test_the_legacy_queue_query_reads_a_legacy_queue_database_through_the_source(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE queue (id INTEGER PRIMARY KEY AUTOINCREMENT, payload TEXT, "
        "metadata TEXT, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, status TEXT)"
    )
    batches = [
        [{"dids": ["did:plc:a", "did:plc:b"]}, {"dids": ["did:plc:c"]}, {"dids": []}],
        [{"dids": ["did:plc:a"]}],
        [],
    ]
    db.executemany("INSERT INTO queue (payload) VALUES (?)", [(json.dumps(b),) for b in batches])
    db.commit()
    db.close()
    assert sorted(read_did_query(path, LEGACY_QUEUE_QUERY)) == [
        "did:plc:a",
        "did:plc:b",
        "did:plc:c",
    ]


def test_project_home_makes_legacy_relative_paths_absolute(tmp_path: Path) -> None:
    home = tmp_path / "research"
    migration = migrate_config(write(tmp_path, ENGAGED_POSTS), project_home=home, environ={})
    assert migration.config.source.path == home / (  # type: ignore[union-attr]
        "scripts/backfill/backfill_user_dids_engaged_with_by_study_users.sqlite"
    )
    assert str(home) in migration.text
    assert not any("--project-home" in note for note in migration.notes)


def test_a_config_without_the_backfill_wrapper_and_file_sources_migrate(tmp_path: Path) -> None:
    text = """\
name: "Study Users (Wave 2)"
version: "2"
source: {type: csv, path: /data/users.csv, metadata: "legacy column info"}
plc_storage: {type: sqlite, path: /data/plc.sqlite, metadata: ""}
record_types: [app.bsky.feed.post]
time_range: {start_date: "2024-10-01-12:30:00"}
sync_storage: {type: jsonl, path: /data/out, metadata: ""}
"""
    migration = migrate_config(text, environ={})
    assert migration.config.name == "study_users_wave_2"
    assert migration.config.source == FileSource(
        type="file", path=Path("/data/users.csv"), column="did"
    )
    assert migration.config.time_range.start_date == datetime(2024, 10, 1, 12, 30, tzinfo=UTC)
    assert migration.config.storage.type == "jsonl"
    notes = "\n".join(migration.notes)
    assert "renamed 'Study Users (Wave 2)'" in notes
    assert "dropped source.metadata" in notes


@pytest.mark.parametrize(
    ("change", "key", "line", "message"),
    [
        (
            ('  version: "1.0"', '  version: "1.0"\n  retries: 3'),
            "backfill.retries",
            4,
            "not a key of the legacy format",
        ),
        (
            (
                'type: "sqlite"\n    path: "scripts/backfill/backfill_study_users.sqlite"',
                'type: "bigquery"\n    path: "x"',
            ),
            "backfill.source.type",
            5,
            "must be sqlite, s3",
        ),
        (
            ('    - "app.bsky.feed.like"', '    - "likes"'),
            "backfill.record_types[1]",
            14,
            "is not an NSID",
        ),
        (
            ('start_date: "2024-09-28-00:00:00"', 'start_date: "yesterday"'),
            "backfill.time_range.start_date",
            19,
            "is not a date",
        ),
        (
            ('  sync_storage:\n    type: "parquet"', '  sync_storage:\n    type: "bigquery"'),
            "backfill.sync_storage.type",
            22,
            "must be parquet, sqlite",
        ),
    ],
)
def test_problems_are_located_in_the_legacy_file(
    tmp_path: Path, change: tuple[str, str], key: str, line: int, message: str
) -> None:
    assert change[0] in STUDY_USERS
    path = write(tmp_path, STUDY_USERS.replace(*change))
    with pytest.raises(ConfigError) as caught:
        migrate_config(path, environ={})
    problem = caught.value.problems[0]
    assert (problem.source, problem.key, problem.line) == (str(path), key, line)
    assert message in problem.message


def test_a_filter_on_two_subject_columns_cannot_be_migrated(tmp_path: Path) -> None:
    text = ENGAGED_POSTS.replace("      - uri\n", "      - uri\n      - cid\n")
    with pytest.raises(ConfigError, match="one column") as caught:
        migrate_config(write(tmp_path, text), environ={})
    assert (caught.value.key, caught.value.line) == ("backfill.filters.subject", 19)


def test_a_filter_record_type_narrower_than_the_job_is_noted(tmp_path: Path) -> None:
    text = ENGAGED_POSTS.replace(
        '    - "app.bsky.feed.post"\n  time_range',
        '    - "app.bsky.feed.post"\n    - "app.bsky.feed.like"\n  time_range',
    )
    notes = migrate_config(write(tmp_path, text), environ={}).notes
    assert any("applied to app.bsky.feed.post only" in note for note in notes)
