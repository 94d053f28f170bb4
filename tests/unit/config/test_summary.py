"""The validate summary: one screen, and nothing from the environment in it."""

from __future__ import annotations

from pathlib import Path

from bsky_backfill.config import load_config
from bsky_backfill.config.summary import missing_inputs, summarize
from tests.unit.config.helpers import MINIMAL, with_lines


def test_the_summary_is_one_screen_and_names_the_essentials(tmp_path: Path) -> None:
    config = load_config(MINIMAL, base_dir=tmp_path, environ={})
    lines = summarize(config)
    assert len(lines) <= 20
    assert all(len(line) <= 120 for line in lines)
    text = "\n".join(lines)
    for expected in (
        "study (version 1.0)",
        "inline, 1 DID\n",
        "2025-01-02T00:00:00Z <= t < no end",
        "private addresses refused, repos up to 2 GiB",
        f"parquet {tmp_path / 'data' / 'study'}",
        "metrics on 127.0.0.1:8000 (busiest 50 hosts by name), log INFO, failures logged",
        config.config_hash(),
    ):
        assert expected in text


def test_the_summary_shows_references_not_values_from_the_environment(tmp_path: Path) -> None:
    text = with_lines(
        """\
        identity: {plc_url: "https://${PLC}"}
        storage: {type: s3, path: "s3://${BUCKET}/runs", endpoint_url: "http://${S3}"}
        monitoring: {alert_webhook_url: "https://hooks.example.com/${TOKEN}", prometheus_port: 0}
        """
    )
    environ = {"PLC": "plc.secret", "BUCKET": "secret-bucket", "S3": "s3.secret", "TOKEN": "tok"}
    summary = "\n".join(summarize(load_config(text, base_dir=tmp_path, environ=environ)))
    assert "secret" not in summary
    assert "https://${PLC}" in summary
    assert "s3://${BUCKET}/runs via http://${S3}" in summary
    assert "metrics off" in summary


def test_missing_local_inputs_are_listed_not_refused(tmp_path: Path) -> None:
    (tmp_path / "dids.txt").write_text("did:plc:z72i7hdynmk6r22z27h6tvur\n")
    text = (
        MINIMAL.replace(
            "{type: inline, dids: [did:plc:z72i7hdynmk6r22z27h6tvur]}",
            "{type: file, path: dids.txt}",
        )
        + "  filters: {subject_uris: {path: uris.parquet}}\n"
    )
    config = load_config(text, base_dir=tmp_path, environ={})
    assert missing_inputs(config) == [
        f"backfill.filters.subject_uris.path: {tmp_path / 'uris.parquet'}"
    ]


def test_cloud_storage_shows_its_tables_oversize_policy_and_local_state(tmp_path: Path) -> None:
    text = with_lines("storage: {type: dynamodb, create_tables: true, work_dir: state}")
    summary = "\n".join(summarize(load_config(text, base_dir=tmp_path, environ={})))
    assert "backfill_results/backfill_user_metadata/backfill_metadata in us-west-2" in summary
    assert "created if missing" in summary
    assert "records over 400 KB: omitted (no overflow_path)" in summary
    assert f"job state in {tmp_path / 'state'}" in summary
