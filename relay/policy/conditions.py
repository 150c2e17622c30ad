"""Compiled `match` trees: each node answers `match(ctx)` with spans, or None for no match.

An empty span list means "matched, but not at a place in the text" (attachments, channel,
sender group, `not`). Nodes only read the per-message context, so evaluation is pure.
"""

from __future__ import annotations

import re
from typing import Protocol

from relay.model import Attachment
from relay.policy.detectors import Finding, score_with_context

Spans = list[tuple[int, int]]


class Context(Protocol):
    text: str
    channel: str
    sender_groups: tuple[str, ...]
    attachments: tuple[Attachment, ...]

    def keyword_hits(self) -> dict[int, Spans]: ...

    def regex_spans(self, index: int) -> Spans | None: ...

    def findings(self, detector: str) -> list[Finding]: ...


class Node:
    __slots__ = ()

    def match(self, ctx: Context) -> Spans | None:
        raise NotImplementedError


class All(Node):
    __slots__ = ("children",)

    def __init__(self, children: list[Node]) -> None:
        self.children = tuple(children)

    def match(self, ctx: Context) -> Spans | None:
        spans: Spans = []
        for child in self.children:
            found = child.match(ctx)
            if found is None:
                return None
            spans.extend(found)
        return spans


class Any_(Node):
    __slots__ = ("children",)

    def __init__(self, children: list[Node]) -> None:
        self.children = tuple(children)

    def match(self, ctx: Context) -> Spans | None:
        spans: Spans | None = None
        for child in self.children:
            found = child.match(ctx)
            if found is not None:
                if spans is None:
                    spans = []
                spans.extend(found)
        return spans


class Not(Node):
    __slots__ = ("child",)

    def __init__(self, child: Node) -> None:
        self.child = child

    def match(self, ctx: Context) -> Spans | None:
        return [] if self.child.match(ctx) is None else None


class Keywords(Node):
    __slots__ = ("leaf",)

    def __init__(self, leaf: int) -> None:
        self.leaf = leaf

    def match(self, ctx: Context) -> Spans | None:
        return ctx.keyword_hits().get(self.leaf)


class Regex(Node):
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def match(self, ctx: Context) -> Spans | None:
        return ctx.regex_spans(self.index)


class Detector(Node):
    __slots__ = ("name", "context", "min_score")

    def __init__(self, name: str, context: re.Pattern[str] | None, min_score: float) -> None:
        self.name = name
        self.context = context
        self.min_score = min_score

    def match(self, ctx: Context) -> Spans | None:
        findings = ctx.findings(self.name)
        if not findings:
            return None
        if self.min_score <= 0:
            return [(start, end) for start, end, _ in findings]
        spans = [
            (f[0], f[1]) for f in findings if score_with_context(ctx.text, f, self.context) >= self.min_score
        ]
        return spans or None


class AttachmentMatch(Node):
    """Matches when one attachment satisfies every given criterion."""

    __slots__ = ("mime", "ext", "name", "size_gt")

    def __init__(
        self,
        mime: re.Pattern[str] | None,
        ext: frozenset[str] | None,
        name: re.Pattern[str] | None,
        size_gt: int | None,
    ) -> None:
        self.mime = mime
        self.ext = ext
        self.name = name
        self.size_gt = size_gt

    def match(self, ctx: Context) -> Spans | None:
        for att in ctx.attachments:
            if self.size_gt is not None and not att.size > self.size_gt:
                continue
            if self.ext is not None and att.ext not in self.ext:
                continue
            if self.mime is not None and self.mime.match(att.mime or "") is None:
                continue
            if self.name is not None and self.name.match(att.name.rsplit("/", 1)[-1]) is None:
                continue
            return []
        return None


class SenderGroup(Node):
    __slots__ = ("groups",)

    def __init__(self, groups: frozenset[str]) -> None:
        self.groups = groups

    def match(self, ctx: Context) -> Spans | None:
        for group in ctx.sender_groups:
            if group in self.groups:
                return []
        return None


class Channel(Node):
    __slots__ = ("pattern",)

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern

    def match(self, ctx: Context) -> Spans | None:
        return [] if self.pattern.match(ctx.channel) is not None else None
