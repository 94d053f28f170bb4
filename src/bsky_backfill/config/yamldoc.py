"""Read config YAML into plain data, with the line of every key and ``${NAME}`` expanded.

The YAML is composed into a node tree first (never ``yaml.load``), so every key and list
item keeps its line; the tree is then built into dicts, lists and scalars by hand, which
also lets us refuse what a config has no use for and that only hides mistakes: duplicate
keys (PyYAML silently keeps the last), aliases (``*name``, and with them "billion laughs"
documents), merge keys, and tags beyond the standard scalar ones. Timestamps are not
resolved implicitly: dates stay text, so the schema alone decides what a date means.

``${NAME}`` in a scalar value is replaced by that environment variable; ``$${`` writes a
literal ``${``. An unquoted scalar is re-typed after substitution (``port: ${PORT}`` gives
an int), a quoted one stays text. Values substituted are never put into messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bsky_backfill.errors import ConfigError

__all__ = ["Key", "YamlDocument", "format_key", "read_yaml", "with_section"]

Key = str | int
"""One step of a key path: a mapping key, or a list index."""

_TAG = "tag:yaml.org,2002:"
_IMPLICIT_TAGS = {_TAG + name for name in ("bool", "int", "float", "null")}
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_<>-]+")
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")


class _Loader(yaml.SafeLoader):
    """SafeLoader resolving only null, bool, int and float implicitly, and no aliases."""

    # A class attribute, as PyYAML reads it (its stubs call it an instance one, hence noqa).
    yaml_implicit_resolvers: dict[Any, Any] = {  # noqa: RUF012
        first: [(tag, regexp) for tag, regexp in resolvers if tag in _IMPLICIT_TAGS]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, text: str) -> None:
        super().__init__(text)
        # id(node) -> the implicit flags of a scalar written without a tag: such a scalar
        # is re-resolved after ${NAME} substitution, an explicitly tagged one is not.
        self.untagged: dict[int, tuple[bool, bool]] = {}

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            raise ConfigError(
                "aliases (*name) are not supported in configs: write the value out",
                line=self.peek_event().start_mark.line + 1,  # type: ignore[no-untyped-call]
            )
        return super().compose_node(parent, index)

    def compose_scalar_node(self, anchor: Any) -> ScalarNode:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        node = super().compose_scalar_node(anchor)
        if event.tag in (None, "!"):
            self.untagged[id(node)] = event.implicit
        return node


@dataclass(frozen=True)
class YamlDocument:
    """One config document as plain data, and where each part of it was written.

    ``lines`` maps a key path to the 1-based line of that key (or list item).
    ``env_fields`` maps the path of each field whose value used ``${NAME}`` (mapping keys
    only: a list counts as one field) to its value as written, unexpanded. ``env_values``
    holds every substituted value, so that callers can keep them out of any text they
    show. ``problems`` are references that could not be expanded; their paths are in
    ``broken``.
    """

    data: Any
    lines: Mapping[tuple[Key, ...], int]
    env_fields: Mapping[tuple[Key, ...], Any] = field(default_factory=dict)
    env_paths: frozenset[tuple[Key, ...]] = frozenset()
    env_values: frozenset[str] = frozenset()
    problems: tuple[ConfigError, ...] = ()
    broken: frozenset[tuple[Key, ...]] = frozenset()

    def line_of(self, path: tuple[Key, ...]) -> int | None:
        """The line of ``path``, or of its nearest ancestor written in the file."""
        for end in range(len(path), -1, -1):
            if (line := self.lines.get(path[:end])) is not None:
                return line
        return None


def format_key(path: tuple[Key, ...]) -> str:
    """``('backfill', 'record_types', 2)`` -> ``backfill.record_types[2]``.

    A key that is not plain printable text (spaces, dots, control characters, not a
    string) is shown quoted, so that a key path always fits on one line.
    """
    text = ""
    for key in path:
        if isinstance(key, int) and not isinstance(key, bool):
            text += f"[{key}]"
            continue
        shown = key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else repr(key)
        text += f".{shown}" if text else shown
    return text


def read_yaml(text: str, *, environ: Mapping[str, str] | None) -> YamlDocument:
    """Parse one YAML document; with ``environ``, expand ``${NAME}`` references from it.

    Raises ``ConfigError`` (with its line) for text that is not YAML, several documents,
    or YAML features a config does not allow. Missing variables are not raised: they are
    returned in ``problems`` so they can be reported with every other problem at once.
    An empty document gives ``data`` None.
    """
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # checks the characters first: may raise a ReaderError
        root = loader.get_single_node()
        if root is None:
            return YamlDocument(data=None, lines={})
        builder = _Builder(loader, environ, root)
        return YamlDocument(
            data=builder.build(root, (), ()),
            lines=builder.lines,
            env_fields={path: builder.raw(node) for path, node in builder.env_fields.items()},
            env_paths=frozenset(builder.env_paths),
            env_values=frozenset(builder.env_values),
            problems=tuple(builder.problems),
            broken=frozenset(builder.broken),
        )
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        fix = "check the indentation, colons and quotes"
        lines = text.splitlines()
        if mark and mark.line < len(lines) and "${" in lines[mark.line]:
            fix = "inside [...] or {...}, put ${NAME} in quotes"
        raise ConfigError(
            f"not valid YAML ({what}): {fix}", line=mark.line + 1 if mark else None
        ) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        raise ConfigError(
            f"contains the character U+{exc.character:04X}, which YAML does not allow: remove it",
            line=text.count("\n", 0, exc.position) + 1,
        ) from None
    except RecursionError:
        raise ConfigError("nested too deeply to be a config") from None
    finally:
        if loader is not None:
            loader.dispose()


class _Builder:
    """Builds plain data from a composed node tree, recording lines and substitutions."""

    def __init__(self, loader: _Loader, environ: Mapping[str, str] | None, root: Node) -> None:
        self.loader = loader
        self.environ = environ
        self.lines: dict[tuple[Key, ...], int] = {}
        self.field_nodes: dict[tuple[Key, ...], Node] = {(): root}
        self.env_fields: dict[tuple[Key, ...], Node] = {}
        self.env_paths: set[tuple[Key, ...]] = set()
        self.env_values: set[str] = set()
        self.problems: list[ConfigError] = []
        self.broken: set[tuple[Key, ...]] = set()

    def build(self, node: Node, path: tuple[Key, ...], field: tuple[Key, ...]) -> Any:
        """Data for ``node`` at ``path``; ``field`` is the enclosing field (no list steps)."""
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, ScalarNode):
            return self._scalar(node, path, field)
        if isinstance(node, SequenceNode) and node.tag == _TAG + "seq":
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.build(item, (*path, index), field))
            return items
        if isinstance(node, MappingNode) and node.tag == _TAG + "map":
            return self._mapping(node, path, field)
        tag = node.tag.replace(_TAG, "!!")
        raise self._error(node, path, f"the tag {tag} is not supported: use a plain value")

    def _mapping(
        self, node: MappingNode, path: tuple[Key, ...], field: tuple[Key, ...]
    ) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise self._error(key_node, path, "a key must be plain text, not a collection")
            key = self._construct(key_node, path)
            if key in result:
                raise self._error(
                    key_node,
                    (*path, key),
                    f"appears twice (first on line {self.lines[(*path, key)]}): keep one",
                )
            self.lines[(*path, key)] = key_node.start_mark.line + 1
            # A field path follows mapping keys only; inside a list it stays the list.
            child_field = field
            if len(field) == len(path):
                child_field = (*field, key)
                self.field_nodes[child_field] = value_node
            result[key] = self.build(value_node, (*path, key), child_field)
        return result

    def _scalar(self, node: ScalarNode, path: tuple[Key, ...], field: tuple[Key, ...]) -> Any:
        if self.environ is None or "${" not in node.value:
            return self._construct(node, path)
        value = self._substitute(node, path)
        if value is None:
            self.broken.add(path)
            return node.value
        self.env_fields[field] = self.field_nodes[field]
        self.env_paths.add(path)
        implicit = self.loader.untagged.get(id(node))
        tag = (
            self.loader.resolve(ScalarNode, value, implicit)  # type: ignore[no-untyped-call]
            if implicit is not None
            else node.tag
        )
        expanded = ScalarNode(tag, value, node.start_mark, node.end_mark, node.style)
        return self._construct(expanded, path, secret=True)

    def _substitute(self, node: ScalarNode, path: tuple[Key, ...]) -> str | None:
        """``node``'s text with references expanded, or None after recording a problem."""
        assert self.environ is not None
        environ = self.environ
        missing: list[str] = []

        def expand(match: re.Match[str]) -> str:
            if match.group() == "$${":
                return "${"
            name = match.group(1)
            if name is None:
                raise self._error(
                    node,
                    path,
                    "a ${ without a valid NAME}: write ${NAME} (letters, digits and _), "
                    "or $${ for a literal ${",
                )
            if name not in environ:
                missing.append(name)
                return ""
            self.env_values.add(environ[name])
            return environ[name]

        value = _REFERENCE.sub(expand, node.value)
        for name in dict.fromkeys(missing):
            self.problems.append(
                ConfigError(
                    f"environment variable {name} is not set: export it, or replace "
                    f"${{{name}}} with the value",
                    key=format_key(path),
                    line=node.start_mark.line + 1,
                )
            )
        return None if missing else value

    def _construct(self, node: ScalarNode, path: tuple[Key, ...], *, secret: bool = False) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError):
            # e.g. "!!int abc": the message would quote the value, which may be a secret.
            what = node.tag.replace(_TAG, "")
            fix = "remove the tag" if not secret else "check the variable's value"
            raise self._error(node, path, f"is not a valid {what}: {fix}") from None

    def raw(self, node: Node) -> Any:
        """``node`` as written: scalars as their text (so ``${NAME}`` stays unexpanded)."""
        if isinstance(node, ScalarNode):
            if "${" in node.value:
                return node.value
            return self.loader.construct_object(node, deep=True)
        if isinstance(node, SequenceNode):
            return [self.raw(item) for item in node.value]
        return {self.loader.construct_object(k): self.raw(v) for k, v in node.value}

    def _error(self, node: Node, path: tuple[Key, ...], message: str) -> ConfigError:
        return ConfigError(message, key=format_key(path) or None, line=node.start_mark.line + 1)


def with_section(text: str, key: str, value: Any) -> str:
    """``text`` (a config without ``${NAME}`` references) with ``backfill.<key>`` set to
    ``value``, as YAML that reads back to the same data. Comments are not kept."""
    document = read_yaml(text, environ={})
    if document.problems:
        raise document.problems[0]
    data = document.data
    if not isinstance(data, dict) or not isinstance(data.get("backfill"), dict):
        raise ConfigError("has no 'backfill:' mapping", key="backfill")
    data = {**data, "backfill": {**data["backfill"], key: value}}
    return yaml.safe_dump(_escaped(data), sort_keys=False, allow_unicode=True)


def _escaped(value: Any) -> Any:
    """``${`` written as ``$${`` again, so that reading the dump expands nothing."""
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    return value
