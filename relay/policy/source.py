"""Reads a YAML policy file into plain data while remembering the line of every key and item.

Schema and compile errors are reported as `file:line: reason`; the line comes from the
YAML node marks recorded here against the JSON path of each value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[str | int, ...]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SourceError(Exception):
    """A problem at a line of a source file (the caller adds the file name)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


@dataclass
class SourceDoc:
    """A parsed policy file: its data and the line of each JSON path in it."""

    display: str
    rel: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line(self, path: Path_) -> int:
        """The line of `path`, or of its nearest recorded ancestor."""
        path = tuple(path)
        while path:
            found = self.lines.get(path)
            if found is not None:
                return found
            path = path[:-1]
        return self.lines.get((), 1)

    def at(self, path: Path_, reason: str) -> str:
        return f"{self.display}:{self.line(path)}: {reason}"


def parse_yaml(text: str) -> tuple[Any, dict[Path_, int]]:
    """Parse one YAML document; raise SourceError for syntax errors and duplicate keys."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = " ".join(p for p in (exc.context, exc.problem) if p)
        raise SourceError(line, f"YAML syntax error: {reason}") from exc
    except yaml.YAMLError as exc:
        raise SourceError(1, f"YAML error: {exc}") from exc
    if node is None:
        raise SourceError(1, "empty policy file")
    lines: dict[Path_, int] = {(): node.start_mark.line + 1}
    constructor = yaml.constructor.SafeConstructor()
    data = _build(node, (), lines, constructor)
    return data, lines


def _build(node: yaml.Node, path: Path_, lines: dict[Path_, int], ctor: yaml.constructor.SafeConstructor) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SourceError(key_node.start_mark.line + 1, "mapping keys must be plain scalars")
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SourceError(key_node.start_mark.line + 1, "YAML merge keys (<<) are not supported")
            key = _scalar(key_node, ctor)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                raise SourceError(key_node.start_mark.line + 1, f"duplicate key {key!r}")
            child = (*path, key)
            lines[child] = key_node.start_mark.line + 1
            out[key] = _build(value_node, child, lines, ctor)
        return out
    if isinstance(node, yaml.SequenceNode):
        items: list[Any] = []
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines[child] = item.start_mark.line + 1
            items.append(_build(item, child, lines, ctor))
        return items
    return _scalar(node, ctor)


def _scalar(node: yaml.Node, ctor: yaml.constructor.SafeConstructor) -> Any:
    try:
        return ctor.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:
        raise SourceError(node.start_mark.line + 1, f"bad value: {exc.problem}") from exc
    except (yaml.YAMLError, ValueError) as exc:
        raise SourceError(node.start_mark.line + 1, f"bad value: {exc}") from exc
