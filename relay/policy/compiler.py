"""Turns schema-valid policy documents into compiled rules, reporting `file:line: reason`.

Checks what a JSON Schema cannot: one operator per condition, list and lexicon references,
RE2 syntax, rule ids unique across the set, disclaimer text only on disclaimer rules.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from relay.model import Attachment
from relay.policy.conditions import (
    All,
    Any_,
    AttachmentMatch,
    Channel,
    Detector,
    Keywords,
    Node,
    Not,
    Regex,
    SenderGroup,
)
from relay.policy.detectors import context_pattern
from relay.policy.engine import EvalInput, Rule, RuleTest
from relay.policy.keywords import KeywordIndexBuilder
from relay.policy.normalize import fold_term
from relay.policy.regexes import compile_regex
from relay.policy.source import Path_, SourceDoc, SourceError

OPERATORS = ("all", "any", "not", "keywords", "regex", "detector", "attachment", "sender_group", "channel")
_DETECTOR_OPTIONS = ("context", "min_score")
_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*$")


def parse_size(value: int | str) -> int:
    """Bytes from an integer or a string such as `25MB` (10^6) or `25MiB` (2^20)."""
    if isinstance(value, bool):
        raise ValueError(f"bad size {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"bad size {value!r}")
        return value
    m = _SIZE.match(str(value).lower())
    if m is None or m.group(2) not in _UNITS:
        raise ValueError(f"bad size {value!r} (use bytes or a unit: B, KB, MB, GB, KiB, MiB, GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _globs(patterns: list[str], ignore_case: bool) -> re.Pattern[str]:
    body = "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)
    return re.compile(body, re.IGNORECASE if ignore_case else 0)


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class Compiler:
    """Compiles documents one by one; collects every error instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.keywords = KeywordIndexBuilder()
        self.regex_patterns: list[str] = []
        self.regex_compiled: list[Any] = []
        self.rules: list[tuple[int, int, int, Rule]] = []
        self.rules_without_tests: list[str] = []
        self.lexicon_files: dict[str, bytes] = {}
        self._lexicons: dict[Path, list[str] | None] = {}
        self._rule_ids: dict[str, str] = {}
        self._doc: SourceDoc | None = None
        self._lists: dict[str, list[str]] = {}
        self._lexicon_dir: Path = Path(".")
        self._lexicon_rel: str = "lexicons"
        self._lexicon_display: str = "lexicons"

    def error(self, path: Path_, reason: str) -> None:
        assert self._doc is not None
        self.errors.append(self._doc.at(path, reason))

    def add_document(self, doc: SourceDoc, file_index: int, lexicon_dir: Path, lexicon_rel: str, lexicon_display: str) -> None:
        self._doc = doc
        self._lexicon_dir = lexicon_dir
        self._lexicon_rel = lexicon_rel
        self._lexicon_display = lexicon_display
        data = doc.data
        self._lists = {name: list(terms) for name, terms in (data.get("lists") or {}).items()}
        policy_id = data["policy"]["id"]
        for index, raw in enumerate(data.get("rules") or []):
            rule = self._rule(raw, ("rules", index), policy_id)
            if rule is not None:
                self.rules.append((-rule.priority, file_index, index, rule))

    def ordered_rules(self) -> tuple[Rule, ...]:
        return tuple(rule for *_, rule in sorted(self.rules, key=lambda item: item[:3]))

    def _rule(self, raw: dict[str, Any], path: Path_, policy_id: str) -> Rule | None:
        assert self._doc is not None
        errors_before = len(self.errors)
        rule_id = raw["id"]
        where = f"{self._doc.display}:{self._doc.line((*path, 'id'))}"
        if rule_id in self._rule_ids:
            self.error((*path, "id"), f"duplicate rule id {rule_id!r} (first defined at {self._rule_ids[rule_id]})")
        else:
            self._rule_ids[rule_id] = where
        action = raw["action"]
        if action != "disclaimer" and "text" in raw:
            self.error((*path, "text"), f"rule {rule_id}: `text` is only used with action: disclaimer")
        scope = raw.get("scope") or {}
        directions = frozenset(_as_list(scope.get("direction", ["inbound", "outbound"])))
        channel_globs = _as_list(scope.get("channels", ["*"]))
        channels = None if "*" in channel_globs else _globs(channel_globs, ignore_case=False)
        match = self._condition(raw["match"], (*path, "match")) if "match" in raw else None
        unless = tuple(
            node
            for i, cond in enumerate(raw.get("unless") or [])
            if (node := self._condition(cond, (*path, "unless", i))) is not None
        )
        sample = raw.get("sample")
        share = None
        if sample is not None:
            share = float(str(sample).strip().rstrip("%").strip()) / 100.0
            if not 0 < share <= 1:
                self.error((*path, "sample"), f"rule {rule_id}: sample must be between 0% and 100%, got {sample!r}")
        if len(self.errors) > errors_before:
            return None
        rule = Rule(
            id=rule_id,
            policy=policy_id,
            file=self._doc.display,
            line=self._doc.line((*path, "id")),
            title=raw.get("title", ""),
            severity=raw.get("severity", "medium"),
            action=action,
            text=raw.get("text", ""),
            priority=raw.get("priority", 0),
            stop=bool(raw.get("stop", False)),
            sample=share,
            directions=directions,
            channels=channels,
            first_only=bool(scope.get("first_in_conversation", False)),
            match=match,
            unless=unless,
            channel_globs=tuple(channel_globs),
            sla=_seconds(raw["sla"]) if "sla" in raw else None,
            notify=bool(raw.get("notify", False)),
            silent=bool(raw.get("silent", False)),
        )
        tests = self._tests(raw.get("tests") or [], (*path, "tests"), rule)
        if tests is None:
            return None
        if not tests:
            self.rules_without_tests.append(self._doc.at((*path, "id"), f"rule {rule_id} has no tests"))
        return replace(rule, tests=tuple(tests))

    def _tests(self, raw_tests: list[dict[str, Any]], path: Path_, rule: Rule) -> list[RuleTest] | None:
        assert self._doc is not None
        tests: list[RuleTest] = []
        ok = True
        for index, raw in enumerate(raw_tests):
            attachments: list[Attachment] = []
            for j, att in enumerate(raw.get("attachments") or []):
                try:
                    size = parse_size(att.get("size", 0))
                except ValueError as exc:
                    self.error((*path, index, "attachments", j, "size"), str(exc))
                    ok = False
                    continue
                attachments.append(Attachment(name=att["name"], mime=att.get("mime", ""), size=size))
            inp = EvalInput(
                direction=raw.get("direction", rule.default_direction()),
                channel=raw.get("channel", rule.default_channel()),
                text=raw.get("text", ""),
                attachments=tuple(attachments),
                sender_groups=tuple(_as_list(raw.get("sender_group", []))),
                first_in_conversation=bool(raw.get("first_in_conversation", False)),
                conversation="c-test",
                message_id=f"test:{rule.id}:{index}",
            )
            tests.append(RuleTest(index=index, line=self._doc.line((*path, index)), expect=raw["expect"], input=inp))
        return tests if ok else None

    def _condition(self, raw: dict[str, Any], path: Path_) -> Node | None:
        operators = [key for key in raw if key in OPERATORS]
        if len(operators) != 1:
            found = ", ".join(operators) if operators else "none"
            self.error(path, f"a condition needs exactly one of {', '.join(OPERATORS)} (found: {found})")
            return None
        op = operators[0]
        value = raw[op]
        at = (*path, op)
        if op != "detector":
            for option in _DETECTOR_OPTIONS:
                if option in raw:
                    self.error((*path, option), f"`{option}` only applies to a detector condition")
                    return None
        if op in ("all", "any"):
            children = [self._condition(child, (*at, i)) for i, child in enumerate(value)]
            if any(child is None for child in children):
                return None
            nodes = [c for c in children if c is not None]
            return All(nodes) if op == "all" else Any_(nodes)
        if op == "not":
            child = self._condition(value, at)
            return None if child is None else Not(child)
        if op == "keywords":
            terms = self._keyword_terms(value, at)
            return None if terms is None else Keywords(self.keywords.add_leaf(terms))
        if op == "regex":
            try:
                compiled = compile_regex(value)
            except ValueError as exc:
                self.error(at, f"invalid regex {value!r}: {exc}")
                return None
            self.regex_patterns.append(value)
            self.regex_compiled.append(compiled)
            return Regex(len(self.regex_patterns) - 1)
        if op == "detector":
            context = raw.get("context")
            return Detector(value, context_pattern(context) if context else None, float(raw.get("min_score", 0.0)))
        if op == "attachment":
            return self._attachment(value, at)
        if op == "sender_group":
            return SenderGroup(frozenset(_as_list(value)))
        return Channel(_globs(_as_list(value), ignore_case=False))

    def _keyword_terms(self, value: list[str] | dict[str, str], path: Path_) -> list[str] | None:
        if isinstance(value, list):
            raw_terms = [(term, (*path, i)) for i, term in enumerate(value)]
        elif "list" in value:
            name = value["list"]
            if name not in self._lists:
                known = ", ".join(sorted(self._lists)) or "none defined"
                self.error((*path, "list"), f"unknown list {name!r} (lists in this file: {known})")
                return None
            raw_terms = [(term, ("lists", name, i)) for i, term in enumerate(self._lists[name])]
            if not raw_terms:
                self.error((*path, "list"), f"list {name!r} is empty")
                return None
        else:
            return self._lexicon(value["lexicon"], (*path, "lexicon"))
        folded: list[str] = []
        for term, where in raw_terms:
            f = fold_term(term)
            if not f:
                self.error(where, f"keyword {term!r} is empty after normalization")
                return None
            folded.append(f)
        return folded

    def _lexicon(self, name: str, path: Path_) -> list[str] | None:
        file_name = name if name.endswith(".txt") else f"{name}.txt"
        file = self._lexicon_dir / file_name
        if file in self._lexicons:
            terms = self._lexicons[file]
            if terms is None:
                self.error(path, f"lexicon {name!r} could not be loaded")
            return terms
        display = f"{self._lexicon_display}/{file_name}"
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            self.error(path, f"unknown lexicon {name!r}: no file {display}")
            self._lexicons[file] = None
            return None
        except OSError as exc:
            self.error(path, f"lexicon {name!r}: cannot read {display}: {exc.strerror}")
            self._lexicons[file] = None
            return None
        terms = self._parse_lexicon(data, display)
        self._lexicons[file] = terms
        if terms is not None:
            self.lexicon_files[f"{self._lexicon_rel}/{file_name}"] = data
        return terms

    def _parse_lexicon(self, data: bytes, display: str) -> list[str] | None:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            self.errors.append(f"{display}:{line}: not valid UTF-8")
            return None
        terms: list[str] = []
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            folded = fold_term(stripped)
            if not folded:
                self.errors.append(f"{display}:{number}: term {stripped!r} is empty after normalization")
                return None
            terms.append(folded)
        if not terms:
            self.errors.append(f"{display}:1: lexicon has no terms")
            return None
        return terms

    def _attachment(self, value: dict[str, Any], path: Path_) -> Node | None:
        mime = _globs([m.lower() for m in _as_list(value["mime"])], ignore_case=True) if "mime" in value else None
        name = _globs(_as_list(value["name"]), ignore_case=True) if "name" in value else None
        ext: frozenset[str] | None = None
        if "ext" in value:
            raw_ext = value["ext"]
            if isinstance(raw_ext, dict):
                list_name = raw_ext["list"]
                if list_name not in self._lists:
                    known = ", ".join(sorted(self._lists)) or "none defined"
                    self.error((*path, "ext", "list"), f"unknown list {list_name!r} (lists in this file: {known})")
                    return None
                raw_ext = self._lists[list_name]
            ext = frozenset(e.strip().lstrip(".").lower() for e in _as_list(raw_ext))
        size_gt = None
        if "size_gt" in value:
            try:
                size_gt = parse_size(value["size_gt"])
            except ValueError as exc:
                self.error((*path, "size_gt"), str(exc))
                return None
        return AttachmentMatch(mime, ext, name, size_gt)


def source_error(display: str, exc: SourceError) -> str:
    return f"{display}:{exc.line}: {exc.reason}"


_UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def _seconds(value: str) -> float:
    """`24h`, `90m`, `2d` (the schema has checked the form) as seconds."""
    text = str(value).strip()
    return float(text[:-1].strip()) * _UNIT_SECONDS[text[-1]]
