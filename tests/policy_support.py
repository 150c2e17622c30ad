"""Helpers for the policy tests: write policy files into a temporary directory and load them."""

from __future__ import annotations

import textwrap
from pathlib import Path

from relay.model import Attachment, Verdict
from relay.policy import EvalInput, PolicySet, load_policy_dir

HEADER = "schema: relay-policy/v1\npolicy: {id: %s}\n"


def write(directory: Path, name: str, body: str) -> Path:
    """Write a file (dedented) under `directory`, creating parent folders."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


def policy_file(directory: Path, name: str, rules: str, lists: str = "", policy_id: str | None = None) -> Path:
    """A policy file from a `rules:` body (and optional `lists:` body), both dedented."""
    pid = policy_id or Path(name).stem
    text = HEADER % pid
    if lists:
        text += "lists:\n" + textwrap.indent(textwrap.dedent(lists).strip("\n"), "  ") + "\n"
    text += "rules:\n" + textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ") + "\n"
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_rules(directory: Path, rules: str, lists: str = "") -> PolicySet:
    """Load a one-file set made of `rules` (a YAML list body)."""
    policy_file(directory, "p.yaml", rules, lists)
    return load_policy_dir(directory)


def evaluate(
    ps: PolicySet,
    text: str = "",
    *,
    direction: str = "inbound",
    channel: str = "webchat",
    attachments: tuple[Attachment, ...] = (),
    groups: tuple[str, ...] = (),
    first: bool = False,
    message_id: str = "m-1",
) -> Verdict:
    return ps.evaluate(
        EvalInput(
            direction=direction,
            channel=channel,
            text=text,
            attachments=attachments,
            sender_groups=groups,
            first_in_conversation=first,
            conversation="c-1",
            message_id=message_id,
        )
    )


def spans_text(text: str, verdict: Verdict, rule: str) -> list[str]:
    """The substrings of `text` that `rule` matched."""
    for hit in verdict.matched:
        if hit.rule == rule:
            return [text[s.start : s.end] for s in hit.spans]
    raise AssertionError(f"rule {rule} did not match; matched: {verdict.rules}")
