"""Every config shipped in configs/ validates, and the two-stage example fits together."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bsky_backfill.config import load_config
from bsky_backfill.config.schema import DerivedSource, FileSource, InlineSource
from bsky_backfill.core.outputs import work_dir

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
# Backfill configs (dispatch configs are checked by tests/unit/dispatch).
SHIPPED = sorted(p for p in CONFIGS.rglob("*.yaml") if "backfill" in yaml.safe_load(p.read_text()))


def test_the_default_and_the_examples_are_shipped() -> None:
    names = {path.relative_to(CONFIGS).as_posix() for path in SHIPPED}
    assert {
        "default.yaml",
        "examples/study_user_activity.yaml",
        "examples/engaged_posts_stage1.yaml",
        "examples/engaged_posts_stage2.yaml",
        "examples/cloud_dynamodb.yaml",
    } <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_every_shipped_config_validates(path: Path) -> None:
    config = load_config(path, environ={})
    assert config.name == path.stem
    assert work_dir(config) == path.parent / "data" / path.stem
    assert "#" in path.read_text()  # each explains itself


def test_the_default_runs_a_small_inline_job() -> None:
    config = load_config(CONFIGS / "default.yaml", environ={})
    assert isinstance(config.source, InlineSource)
    assert 0 < len(config.source.dids) <= 10
    assert config.time_range.end_date is not None


def test_the_study_user_file_exists_beside_the_examples_that_read_it() -> None:
    for name in ("study_user_activity", "engaged_posts_stage1"):
        config = load_config(CONFIGS / "examples" / f"{name}.yaml", environ={})
        assert isinstance(config.source, FileSource)
        assert config.source.path.is_file()


def test_stage_two_derives_its_dids_from_stage_one_and_filters_by_uri() -> None:
    stage1 = load_config(CONFIGS / "examples" / "engaged_posts_stage1.yaml", environ={})
    stage2 = load_config(CONFIGS / "examples" / "engaged_posts_stage2.yaml", environ={})
    assert isinstance(stage2.source, DerivedSource)
    assert stage2.source.dataset == stage1.storage.path  # type: ignore[union-attr]
    assert {"like", "repost", "reply", "quote"} <= set(stage2.source.relations)
    assert stage2.filters.subject_uris is not None
    assert stage2.filters.subject_uris.path.is_relative_to(stage1.storage.path)  # type: ignore[union-attr]
    assert {"app.bsky.feed.like", "app.bsky.feed.repost"} <= set(stage1.record_types)
    assert stage2.record_types == ("app.bsky.feed.post",)
