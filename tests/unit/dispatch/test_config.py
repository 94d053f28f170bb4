"""Loading a dispatch config: defaults, normalisation, and every problem located by key
and line, as the backfill config's loader does it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bsky_backfill.dispatch.config import RedisIntegration, WebhookIntegration
from bsky_backfill.dispatch.loader import load_dispatch_config, load_dispatch_config_text
from bsky_backfill.errors import ConfigError
from tests.support import REPO_ROOT

VALID = """\
dispatch:
  name: classify
  dataset: ./data/stage2
  select:
    collections: [app.bsky.feed.post, app.bsky.feed.post]
    time_range: {start_date: "2025-01-02", end_date: "2025-01-03"}
    uris: {path: feed_posts.txt}
    sample: {proportion: 0.25, seed: 7}
    max_records: 1000
  integrations:
    - name: classifier
      type: webhook
      url: https://classifier.example/ingest
      headers: {Authorization: "Bearer ${TOKEN}"}
    - {name: queue, type: redis, url: "redis://queue.example:6379/0", stream: posts}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_dispatch_config_text(text, base_dir=Path("/base"), environ={"TOKEN": "t0k"})
    return [str(problem) for problem in caught.value.problems]


def test_a_valid_config_is_normalised() -> None:
    config = load_dispatch_config_text(VALID, base_dir=Path("/base"), environ={"TOKEN": "t0k"})
    assert config.dataset == Path("/base/data/stage2")
    assert config.select.collections == ("app.bsky.feed.post",)
    assert config.select.uris is not None
    assert config.select.uris.path == Path("/base/feed_posts.txt")
    assert config.select.time_range is not None
    assert config.select.time_range.end_date is not None
    assert config.select.time_range.end_date.isoformat() == "2025-01-04T00:00:00+00:00"
    hook, queue = config.integrations
    assert isinstance(hook, WebhookIntegration)
    assert hook.headers == {"Authorization": "Bearer t0k"}
    assert isinstance(queue, RedisIntegration)
    assert (config.batch_size, config.state_url, config.monitoring.prometheus_port) == (
        100,
        None,
        8000,
    )


def test_the_shipped_example_loads() -> None:
    config = load_dispatch_config(
        REPO_ROOT / "configs" / "examples" / "dispatch.yaml", environ={"CLASSIFIER_TOKEN": "x"}
    )
    assert [i.name for i in config.integrations] == ["classifier", "feed_queue"]


def test_problems_name_key_and_line_of_each() -> None:
    text = VALID.replace("max_records: 1000", "max_records: 0").replace(
        "stream: posts}", "stream: posts, maxlen: -1}\n    - {name: x, type: kafka}"
    )
    assert problems(text) == [
        "line 9: dispatch.select.max_records: must be at least 1 (got 0)",
        "line 15: dispatch.integrations[1].maxlen: must be at least 1 (got -1)",
        "line 16: dispatch.integrations[2].type: is not a known type: use one of webhook, redis",
    ]


def test_an_unknown_key_inside_an_integration_is_located() -> None:
    text = VALID.replace("      type: webhook\n", "      type: webhook\n      timeout: 3\n")
    assert problems(text) == ["line 13: dispatch.integrations[0].timeout: is not a known key"]


def test_duplicate_integration_names_are_refused() -> None:
    text = VALID.replace("name: queue", "name: classifier")
    assert problems(text) == [
        "line 15: dispatch.integrations[1].name: is used twice: each integration needs a "
        "name of its own (got 'classifier')"
    ]


def test_private_receivers_need_the_network_switch() -> None:
    text = VALID.replace("queue.example", "127.0.0.1")
    assert problems(text)[0].startswith(
        "line 15: dispatch.integrations[1].url: points at a loopback or private address"
    )
    allowed = text + "  network: {allow_private_addresses: true}\n"
    load_dispatch_config_text(allowed, base_dir=Path("/base"), environ={"TOKEN": "t"})


def test_a_backfill_config_is_told_apart() -> None:
    assert problems("backfill: {name: x}\n") == [
        "line 1: needs a top-level dispatch: mapping (see configs/examples/dispatch.yaml)"
    ]
    assert problems(VALID + "backfill: {}\n") == [
        "line 16: backfill: belongs in a backfill config (bsky-backfill run), not a dispatch config"
    ]


def test_a_missing_variable_is_reported_without_a_value() -> None:
    with pytest.raises(ConfigError) as caught:
        load_dispatch_config_text(VALID, base_dir=Path("/base"), environ={})
    assert "TOKEN" in str(caught.value)
