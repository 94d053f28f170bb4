"""The config loader under arbitrary input: it returns a config or raises ConfigError, only.

Three sources of input: any text at all; YAML documents built from random data shaped like
a config (real keys at every level, random values, ``${NAME}`` references); and the
shipped default config with random edits. Whatever comes in, no raw yaml, pydantic or
other exception may escape, and every problem must be printable on one line.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsky_backfill.config import load_config, migrate_config
from bsky_backfill.errors import ConfigError

DEFAULT = (Path(__file__).resolve().parents[2] / "configs" / "default.yaml").read_text()
ENVIRON = {"PORT": "9100", "WORD": "hashes", "EMPTY": "", "URL": "https://plc.example"}
BASE = Path("/configs")

KEYS = [
    "backfill", "name", "version", "source", "type", "path", "column", "dids", "query", "uri",
    "endpoint_url", "hosts", "dataset", "relations", "record_types", "time_range",
    "start_date", "end_date", "filters", "subject_uris", "processing", "batch_size",
    "max_concurrent_pds", "requests_per_second", "max_retries", "identity", "plc_url",
    "cache_ttl_seconds", "verify", "network", "allow_private_addresses", "max_repo_bytes",
    "storage", "table_name", "region", "monitoring", "prometheus_port", "log_level",
    "alert_on_failure", "alert_webhook_url", "plc_storage", "sync_storage", "metadata",
    "subject", "record_type", "min_timestamp",
]  # fmt: skip
WORDS = [
    "file", "inline", "sqlite", "s3", "pds", "derived", "parquet", "jsonl", "dynamodb",
    "full", "hashes", "none", "like", "quote", "did:plc:z72i7hdynmk6r22z27h6tvur",
    "app.bsky.feed.post", "2025-01-02", "2025-01-02T00:00:00Z", "2024-09-28-00:00:00",
    "s3://bucket/dids.csv", "https://pds.example", "http://127.0.0.1:1", "dids.txt",
    "${PORT}", "${WORD}", "${MISSING}", "${EMPTY}", "$${x}", "${", "INFO",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(WORDS)
    | st.text(max_size=20)
)
keys = st.sampled_from(KEYS) | st.text(max_size=8)
shaped = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6),
    max_leaves=40,
)
documents = st.one_of(
    st.dictionaries(st.just("backfill"), st.dictionaries(keys, shaped, max_size=12), min_size=1),
    shaped,
)


def check(text: str) -> None:
    try:
        config = load_config(text, base_dir=BASE, environ=ENVIRON)
    except ConfigError as exc:
        for problem in exc.problems:
            assert isinstance(problem, ConfigError)
            assert "\n" not in str(problem)
    else:
        assert config.config_hash().startswith("sha256:")
        assert load_config(yaml.safe_dump(config.redacted()), environ=ENVIRON) is not None


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    check(text + "\n")  # a newline: always text, never taken for a file name


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(documents, st.booleans())
def test_config_shaped_yaml_gives_a_config_or_a_config_error(data: Any, flow: bool) -> None:
    check(yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=len(DEFAULT)),
            st.integers(min_value=0, max_value=8),
            st.text(alphabet=" \t\n:-#[]{}'\"&*!|>%@`$,?abc019", max_size=4),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_an_edited_default_config_gives_a_config_or_a_config_error(
    edits: list[tuple[int, int, str]],
) -> None:
    text = DEFAULT
    for position, deleted, inserted in edits:
        text = text[:position] + inserted + text[position + deleted :]
    check(text + "\n")


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(documents)
def test_migration_gives_a_config_or_a_config_error(data: Any) -> None:
    with contextlib.suppress(ConfigError):
        migrate_config(yaml.safe_dump(data) + "\n", environ=ENVIRON)
