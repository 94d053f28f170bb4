"""read_yaml: lines of keys, ${NAME} expansion and typing, refused YAML features."""

from __future__ import annotations

import pytest

from bsky_backfill.config.yamldoc import format_key, read_yaml
from bsky_backfill.errors import ConfigError

TEXT = """\
backfill:
  name: x            # line 2
  record_types:
    - a.b.c          # line 4
    - d.e.f
  processing: {batch_size: 5,
    max_retries: 2}  # line 7
"""


def test_every_key_and_list_item_has_its_line() -> None:
    document = read_yaml(TEXT, environ={})
    assert document.data == {
        "backfill": {
            "name": "x",
            "record_types": ["a.b.c", "d.e.f"],
            "processing": {"batch_size": 5, "max_retries": 2},
        }
    }
    assert document.lines[("backfill",)] == 1
    assert document.lines[("backfill", "name")] == 2
    assert document.lines[("backfill", "record_types", 0)] == 4
    assert document.lines[("backfill", "record_types", 1)] == 5
    assert document.lines[("backfill", "processing", "batch_size")] == 6
    assert document.lines[("backfill", "processing", "max_retries")] == 7


def test_an_unwritten_key_is_placed_at_its_nearest_written_ancestor() -> None:
    document = read_yaml(TEXT, environ={})
    assert document.line_of(("backfill", "processing", "requests_per_second")) == 6
    assert document.line_of(("backfill", "storage", "path")) == 1


def test_dates_stay_text_so_the_schema_decides_what_they_mean() -> None:
    document = read_yaml("a: 2025-01-02\nb: 2025-13-45\nc: 2025-01-02T00:00:00Z\n", environ={})
    assert document.data == {"a": "2025-01-02", "b": "2025-13-45", "c": "2025-01-02T00:00:00Z"}


@pytest.mark.parametrize(
    ("written", "value", "expected"),
    [
        ("${V}", "8080", 8080),
        ("${V}", "2.5", 2.5),
        ("${V}", "true", True),
        ("${V}", "", None),
        ("${V}", "text", "text"),
        ('"${V}"', "8080", "8080"),
        ("'${V}'", "true", "true"),
        ("!!str ${V}", "8080", "8080"),
        ("port-${V}", "1", "port-1"),
        ("${V}${V}", "1", 11),
    ],
)
def test_unquoted_references_are_retyped_quoted_ones_stay_text(
    written: str, value: str, expected: object
) -> None:
    document = read_yaml(f"key: {written}\n", environ={"V": value})
    assert document.data == {"key": expected}
    assert document.env_paths == {("key",)}
    assert document.env_values == {value}


def test_env_fields_keep_the_text_as_written_for_the_whole_list() -> None:
    text = "a:\n  b: [x, '${V}']\n  c: ${V}\n  d: plain\n"
    document = read_yaml(text, environ={"V": "secret"})
    assert document.data == {"a": {"b": ["x", "secret"], "c": "secret", "d": "plain"}}
    assert document.env_fields == {("a", "b"): ["x", "${V}"], ("a", "c"): "${V}"}
    assert document.env_paths == {("a", "b", 1), ("a", "c")}


def test_without_an_environ_references_are_left_as_written() -> None:
    document = read_yaml("a: ${V}\n", environ=None)
    assert document.data == {"a": "${V}"}
    assert not document.env_paths


def test_missing_variables_are_collected_not_raised() -> None:
    document = read_yaml('a: ${X}\nb: ["${Y}-${X}"]\n', environ={})
    assert [(p.key, p.line) for p in document.problems] == [("a", 1), ("b[0]", 2), ("b[0]", 2)]
    assert "Y is not set" in document.problems[1].message
    assert "X is not set" in document.problems[2].message
    assert document.broken == {("a",), ("b", 0)}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a: 1\na: 2\n", 2, "appears twice (first on line 1)"),
        ("a: &anchor [1]\nb: *anchor\n", 2, "aliases"),
        ("a: !!set {x}\n", 1, "!!set is not supported"),
        ("a: !custom x\n", 1, "is not a valid !custom"),
        ("? [1, 2]\n: x\n", 1, "key must be plain text"),
        ("a: !!float x\n", 1, "is not a valid float"),
        ("a: '${}'\n", 1, "${NAME}"),
        ("a: b: c\n", 1, "not valid YAML"),
    ],
)
def test_features_a_config_does_not_use_are_refused_with_their_line(
    text: str, line: int, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        read_yaml(text, environ={})
    assert caught.value.line == line
    assert message in caught.value.message


def test_merge_keys_are_plain_keys_so_the_schema_refuses_them() -> None:
    assert read_yaml("a:\n  <<: {b: 1}\n", environ={}).data == {"a": {"<<": {"b": 1}}}


def test_an_unquoted_reference_in_a_flow_list_gets_a_hint() -> None:
    with pytest.raises(ConfigError, match=r"put \$\{NAME\} in quotes") as caught:
        read_yaml("a:\n  b: [${X}]\n", environ={"X": "1"})
    assert caught.value.line == 2


def test_very_deep_nesting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_yaml("[" * 3000 + "]" * 3000, environ={})


def test_characters_yaml_does_not_allow_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="U\\+0000, which YAML does not allow") as caught:
        read_yaml("a: 1\nb: \x00\n", environ={})
    assert caught.value.line == 2


def test_format_key_writes_indexes_in_brackets() -> None:
    assert format_key(("backfill", "record_types", 2)) == "backfill.record_types[2]"
    assert format_key(("backfill", "source", "hosts", 0, "x")) == "backfill.source.hosts[0].x"
    assert format_key(()) == ""
    assert format_key(("a", "b c", "x\ny", 1.5, None)) == "a.'b c'.'x\\ny'.1.5.None"
