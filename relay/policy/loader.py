"""Loads a policy directory (or a list of files) into a compiled, versioned `PolicySet`.

Every problem in every file is collected and raised together as `PolicyLoadError`, each as
`file:line: reason`, so one `relay policy check` run shows everything to fix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from relay.policy.compiler import Compiler, source_error
from relay.policy.engine import PolicySet
from relay.policy.errors import PolicyLoadError
from relay.policy.regexes import RegexBank
from relay.policy.source import Path_, SourceDoc, SourceError, parse_yaml

POLICY_SUFFIXES = (".yaml", ".yml")
LEXICON_DIR = "lexicons"


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(resources.files("relay.policy").joinpath("schema.json").read_text("utf-8"))
    return jsonschema.Draft202012Validator(schema)


def schema() -> dict[str, Any]:
    """The policy file JSON Schema (relay-policy/v1)."""
    return dict(_validator().schema)


def is_policy_file(path: Path) -> bool:
    name = path.name
    return name.endswith(POLICY_SUFFIXES) and not name.startswith((".", "#")) and path.is_file()


def policy_files(directory: Path) -> list[Path]:
    """The policy files of a directory, sorted by name (editor backups and dotfiles skipped)."""
    return sorted((p for p in directory.iterdir() if is_policy_file(p)), key=lambda p: p.name)


@dataclass(frozen=True)
class _Member:
    path: Path
    rel: str
    display: str
    root: Path
    root_rel: str
    root_display: str


def load_policy_dir(directory: Path | str) -> PolicySet:
    """Load every `*.yaml` policy file in `directory` (lexicons from `directory/lexicons`)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PolicyLoadError([f"{directory}: not a directory"])
    files = policy_files(directory)
    if not files:
        raise PolicyLoadError([f"{directory}: no policy files (*.yaml)"])
    members = [_Member(f, f.name, str(f), directory, LEXICON_DIR, str(directory / LEXICON_DIR)) for f in files]
    return _load(members, str(directory))


def load_policy_paths(paths: Sequence[Path | str]) -> PolicySet:
    """Load directories and single files as one set (a file's lexicons: its dir's `lexicons/`)."""
    members: list[_Member] = []
    errors: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = policy_files(path)
            if not files:
                errors.append(f"{path}: no policy files (*.yaml)")
            prefix = "" if len(paths) == 1 else f"{path}/"
            for f in files:
                members.append(_Member(f, prefix + f.name, str(f), path, prefix + LEXICON_DIR, str(path / LEXICON_DIR)))
        elif path.is_file():
            prefix = "" if len(paths) == 1 else f"{path.parent}/"
            members.append(
                _Member(path, prefix + path.name, str(path), path.parent, prefix + LEXICON_DIR, str(path.parent / LEXICON_DIR))
            )
        else:
            errors.append(f"{path}: no such file or directory")
    if errors:
        raise PolicyLoadError(errors)
    return _load(members, ", ".join(str(p) for p in paths))


def _load(members: list[_Member], source: str) -> PolicySet:
    errors: list[str] = []
    contents: dict[str, bytes] = {}
    docs: list[tuple[_Member, SourceDoc]] = []
    for member in members:
        try:
            raw = member.path.read_bytes()
        except OSError as exc:
            errors.append(f"{member.display}:1: cannot read: {exc.strerror}")
            continue
        contents[member.rel] = raw
        doc = _parse(member, raw, errors)
        if doc is not None:
            docs.append((member, doc))
    compiler = Compiler()
    for index, (member, doc) in enumerate(docs):
        compiler.add_document(doc, index, member.root / LEXICON_DIR, member.root_rel, member.root_display)
    errors.extend(compiler.errors)
    regexes: RegexBank | None = None
    if not errors:
        try:
            regexes = RegexBank(compiler.regex_patterns, compiler.regex_compiled)
        except ValueError as exc:
            errors.append(f"{source}: regex set failed to compile: {exc}")
    if errors or regexes is None:
        raise PolicyLoadError(_by_location(errors))
    contents.update(compiler.lexicon_files)
    version, files = _fingerprint(contents)
    return PolicySet(
        version=version,
        files=files,
        rules=compiler.ordered_rules(),
        keywords=compiler.keywords.build(),
        regexes=regexes,
        rules_without_tests=compiler.rules_without_tests,
        source=source,
    )


_LOCATION = re.compile(r"^(.*?):(\d+): ")


def _by_location(errors: list[str]) -> list[str]:
    """Errors ordered by file, then line (stable for errors without a location)."""

    def key(message: str) -> tuple[str, int]:
        m = _LOCATION.match(message)
        return (m.group(1), int(m.group(2))) if m else (message, 0)

    return sorted(errors, key=key)


def _fingerprint(contents: dict[str, bytes]) -> tuple[str, dict[str, str]]:
    """Set version: SHA-256 over (relative path, NUL, length, NUL, bytes) of sorted files."""
    digest = hashlib.sha256()
    files: dict[str, str] = {}
    for rel in sorted(contents):
        data = contents[rel]
        files[rel] = hashlib.sha256(data).hexdigest()
        digest.update(rel.encode("utf-8") + b"\0" + str(len(data)).encode() + b"\0")
        digest.update(data)
    return digest.hexdigest(), files


def _parse(member: _Member, raw: bytes, errors: list[str]) -> SourceDoc | None:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        errors.append(f"{member.display}:{line}: not valid UTF-8")
        return None
    try:
        data, lines = parse_yaml(text)
    except SourceError as exc:
        errors.append(source_error(member.display, exc))
        return None
    doc = SourceDoc(display=member.display, rel=member.rel, data=data, lines=lines)
    schema_errors = list(_schema_errors(doc))
    if schema_errors:
        errors.extend(schema_errors)
        return None
    return doc


def _schema_errors(doc: SourceDoc) -> Iterable[str]:
    found: list[tuple[int, str]] = []
    for error in _validator().iter_errors(doc.data):
        for path, subject, reason in _explain(error):
            found.append((doc.line(path), doc.at(path, f"{_where(doc, subject)}{reason}")))
    seen: set[str] = set()
    for _, message in sorted(found, key=lambda item: item[0]):
        if message not in seen:
            seen.add(message)
            yield message


def _explain(error: ValidationError) -> list[tuple[Path_, Path_, str]]:
    """(path whose line to report, path to name in the message, reason) per problem."""
    if error.context:
        error = best_match(error.context)
    path = tuple(error.absolute_path)
    kind = error.validator
    custom = error.schema.get("x-message") if isinstance(error.schema, dict) else None
    if custom and kind not in ("additionalProperties", "required"):
        return [(path, path, f"{_short(error.instance)} {custom}")]
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        out = []
        for key in error.instance:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(allowed)})"
            out.append(((*path, key), path, f"unknown key {key!r}{hint}"))
        return out
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return [(path, path, f"expected {_article(expected)}, got {_json_type(error.instance)}")]
    if kind == "enum":
        options = ", ".join(str(v) for v in error.validator_value)
        return [(path, path, f"{_short(error.instance)} is not one of: {options}")]
    if kind == "const":
        return [(path, path, f"must be {error.validator_value!r}, got {_short(error.instance)}")]
    if kind in ("minItems", "minLength", "minProperties"):
        return [(path, path, "must not be empty")]
    if kind == "pattern":
        return [(path, path, f"{_short(error.instance)} is not valid here (must match {error.validator_value})")]
    if kind == "required":
        return [(path, path, error.message)]
    return [(path, path, error.message if len(error.message) < 200 else error.message[:197] + "...")]


def _where(doc: SourceDoc, path: Path_) -> str:
    """A readable prefix naming the rule and the key, e.g. `rule PII-001: action: `."""
    parts: list[str] = []
    rest = list(path)
    if len(rest) >= 2 and rest[0] == "rules" and isinstance(rest[1], int):
        rules = doc.data.get("rules") if isinstance(doc.data, dict) else None
        rule = rules[rest[1]] if isinstance(rules, list) and rest[1] < len(rules) else None
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        parts.append(f"rule {rule_id}" if isinstance(rule_id, str) else f"rules[{rest[1]}]")
        rest = rest[2:]
    key = ""
    for item in rest:
        key += f"[{item}]" if isinstance(item, int) else (f".{item}" if key else str(item))
    if key:
        parts.append(key)
    return "".join(f"{p}: " for p in parts)


def _article(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return f"string {_short(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

