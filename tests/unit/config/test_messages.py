"""problems_from: key paths without union tags, fixes, and values shown or hidden."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bsky_backfill.config.messages import problems_from
from bsky_backfill.config.schema import ConfigDocument
from bsky_backfill.config.yamldoc import read_yaml
from bsky_backfill.errors import ConfigError


def translate(text: str, environ: dict[str, str] | None = None) -> list[ConfigError]:
    document = read_yaml(text, environ=environ or {})
    with pytest.raises(ValidationError) as caught:
        ConfigDocument.model_validate(document.data)
    return problems_from(caught.value, document)


def test_union_tags_are_not_part_of_the_key_path() -> None:
    text = "backfill:\n  source:\n    type: file\n    path: 7\n"
    keys = {p.key: p for p in translate(text)}
    assert "backfill.source.path" in keys
    assert keys["backfill.source.path"].line == 4
    assert not any(".file" in key for key in keys if key)


def test_the_value_is_shown_unless_it_came_from_the_environment() -> None:
    shown = translate("backfill:\n  verify: maybe\n")
    assert "(got 'maybe')" in next(p.message for p in shown if p.key == "backfill.verify")
    hidden = translate("backfill:\n  verify: ${V}\n", {"V": "maybe"})
    message = next(p.message for p in hidden if p.key == "backfill.verify")
    assert "maybe" not in message
    assert message.startswith("must be one of")


def test_long_values_are_shortened() -> None:
    problem = next(
        p for p in translate(f"backfill:\n  verify: {'x' * 500}\n") if p.key == "backfill.verify"
    )
    assert len(problem.message) < 150
    assert problem.message.endswith("xxx...)")


def test_problems_come_in_line_order_without_duplicates() -> None:
    found = translate("backfill:\n  verify: x\n  name: Y\n")
    lines = [p.line or 0 for p in found]
    assert lines == sorted(lines)
    assert len({(p.key, p.message) for p in found}) == len(found)
