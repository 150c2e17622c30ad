"""Loading: every error as `file:line: reason` with the right line; versions; lint warnings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from relay.policy import PolicyLoadError, load_policy_dir, load_policy_paths
from tests.policy_support import policy_file, write


def load_errors(directory: Path) -> list[str]:
    with pytest.raises(PolicyLoadError) as info:
        load_policy_dir(directory)
    assert info.value.errors
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", "schema: relay-policy/v1\npolicy: {id: x}\nrules:\n  - id: [unclosed\n")
    errors = load_errors(tmp_path)
    assert len(errors) == 1
    assert errors[0].startswith(f"{tmp_path / 'bad.yaml'}:5: YAML syntax error")


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    write(tmp_path, "dup.yaml", "schema: relay-policy/v1\npolicy: {id: x}\npolicy: {id: y}\nrules: []\n")
    assert load_errors(tmp_path) == [f"{tmp_path / 'dup.yaml'}:3: duplicate key 'policy'"]


def test_schema_violations_point_at_the_key(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p.yaml",
        """
        schema: relay-policy/v1
        policy: {id: p}
        rules:
          - id: R1
            match: {keywords: [a]}
            action: blok
          - id: R2
            acton: flag
            action: flag
          - id: R3
            action: flag
            severity: huge
            tests:
              - {text: hi, expect: flag}
              - {text: hi, expect: maybe}
          - id: R4
            action: disclaimer
        """,
    )
    f = tmp_path / "p.yaml"
    assert load_errors(tmp_path) == [
        f"{f}:6: rule R1: action: 'blok' is not one of: allow, flag, redact, quarantine, block, disclaimer",
        f"{f}:8: rule R2: unknown key 'acton'; did you mean 'action'?",
        f"{f}:12: rule R3: severity: 'huge' is not one of: low, medium, high, critical",
        f"{f}:15: rule R3: tests[1].expect: 'maybe' is not one of: allow, flag, redact, quarantine, block, disclaimer",
        f"{f}:16: rule R4: 'text' is a required property",
    ]


def test_wrong_schema_marker_and_types(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", "schema: relay-policy/v2\npolicy: {id: p}\nrules:\n  - id: R\n    action: flag\n    stop: maybe\n")
    f = tmp_path / "p.yaml"
    assert load_errors(tmp_path) == [
        f"{f}:1: schema: must be 'relay-policy/v1', got 'relay-policy/v2'",
        f"{f}:6: rule R: stop: expected a boolean, got string 'maybe'",
    ]


def test_unknown_list(tmp_path: Path) -> None:
    policy_file(tmp_path, "p.yaml", "- id: R\n  match: {keywords: {list: nope}}\n  action: flag", lists="words: [a]")
    assert load_errors(tmp_path) == [f"{tmp_path / 'p.yaml'}:7: unknown list 'nope' (lists in this file: words)"]


def test_unknown_lexicon(tmp_path: Path) -> None:
    policy_file(tmp_path, "p.yaml", "- id: R\n  match:\n    keywords: {lexicon: missing}\n  action: flag")
    assert load_errors(tmp_path) == [
        f"{tmp_path / 'p.yaml'}:6: unknown lexicon 'missing': no file {tmp_path / 'lexicons'}/missing.txt"
    ]


def test_bad_regex(tmp_path: Path) -> None:
    policy_file(tmp_path, "p.yaml", "- id: OK\n  match: {regex: 'a+'}\n  action: flag\n- id: R\n  match:\n    regex: '(unclosed'\n  action: flag")
    errors = load_errors(tmp_path)
    assert errors == [f"{tmp_path / 'p.yaml'}:9: invalid regex '(unclosed': missing ): (unclosed"]


def test_re2_rejects_backreferences(tmp_path: Path) -> None:
    policy_file(tmp_path, "p.yaml", "- id: R\n  match: {regex: '(a)\\1'}\n  action: flag")
    errors = load_errors(tmp_path)
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path / 'p.yaml'}:5: invalid regex")


def test_duplicate_rule_ids_across_files(tmp_path: Path) -> None:
    policy_file(tmp_path, "a.yaml", "- {id: SAME, action: flag}")
    policy_file(tmp_path, "b.yaml", "- {id: OTHER, action: flag}\n- {id: SAME, action: flag}")
    assert load_errors(tmp_path) == [
        f"{tmp_path / 'b.yaml'}:5: duplicate rule id 'SAME' (first defined at {tmp_path / 'a.yaml'}:4)"
    ]


def test_condition_needs_exactly_one_operator(tmp_path: Path) -> None:
    policy_file(
        tmp_path,
        "p.yaml",
        "- id: R\n  match:\n    keywords: [a]\n    regex: b\n  action: flag\n- id: S\n  match: {keywords: [a], context: [x]}\n  action: flag",
    )
    f = tmp_path / "p.yaml"
    assert load_errors(tmp_path) == [
        f"{f}:5: a condition needs exactly one of all, any, not, keywords, regex, detector, attachment, sender_group, channel (found: keywords, regex)",
        f"{f}:10: `context` only applies to a detector condition",
    ]


def test_text_only_on_disclaimer_and_sample_range(tmp_path: Path) -> None:
    policy_file(tmp_path, "p.yaml", "- id: R\n  action: flag\n  text: hello\n- id: S\n  action: flag\n  sample: 150%")
    f = tmp_path / "p.yaml"
    assert load_errors(tmp_path) == [
        f"{f}:6: rule R: `text` is only used with action: disclaimer",
        f"{f}:9: rule S: sample must be between 0% and 100%, got '150%'",
    ]


def test_bad_size_unit(tmp_path: Path) -> None:
    policy_file(tmp_path, "p.yaml", "- id: R\n  match: {attachment: {size_gt: 25 parsecs}}\n  action: block")
    (error,) = load_errors(tmp_path)
    assert error.startswith(f"{tmp_path / 'p.yaml'}:5: rule R: match.attachment.size_gt: '25 parsecs' must be a size")


def test_lexicon_errors_name_the_lexicon_line(tmp_path: Path) -> None:
    write(tmp_path, "lexicons/words.txt", "fine\n\u200b\n")
    policy_file(tmp_path, "p.yaml", "- id: R\n  match: {keywords: {lexicon: words}}\n  action: flag")
    assert load_errors(tmp_path) == [f"{tmp_path / 'lexicons'}/words.txt:2: term '\\u200b' is empty after normalization"]


def test_all_files_report_together_in_order(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", "rules: [\n")
    policy_file(tmp_path, "a.yaml", "- id: R\n  match: {keywords: {list: x}}\n  action: flag")
    errors = load_errors(tmp_path)
    assert [e.split(":")[0] for e in errors] == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]


def test_empty_file_and_empty_dir(tmp_path: Path) -> None:
    assert load_errors(tmp_path) == [f"{tmp_path}: no policy files (*.yaml)"]
    write(tmp_path, "empty.yaml", "")
    assert load_errors(tmp_path) == [f"{tmp_path / 'empty.yaml'}:1: empty policy file"]


def test_missing_dir(tmp_path: Path) -> None:
    assert load_errors(tmp_path / "nope") == [f"{tmp_path / 'nope'}: not a directory"]


def test_version_is_sha256_over_sorted_paths_and_contents(tmp_path: Path) -> None:
    write(tmp_path, "lexicons/w.txt", "alpha\n")
    write(tmp_path, "lexicons/unused.txt", "beta\n")
    a = policy_file(tmp_path, "a.yaml", "- {id: A, match: {keywords: {lexicon: w}}, action: flag}")
    b = policy_file(tmp_path, "b.yml", "- {id: B, action: flag}")
    write(tmp_path, ".#a.yaml", "garbage: [")
    ps = load_policy_dir(tmp_path)
    contents = {"a.yaml": a.read_bytes(), "b.yml": b.read_bytes(), "lexicons/w.txt": b"alpha\n"}
    digest = hashlib.sha256()
    for rel in sorted(contents):
        digest.update(rel.encode() + b"\0" + str(len(contents[rel])).encode() + b"\0" + contents[rel])
    assert ps.version == digest.hexdigest()
    assert ps.files == {rel: hashlib.sha256(data).hexdigest() for rel, data in contents.items()}
    b.write_text(b.read_text() + "# comment\n")
    assert load_policy_dir(tmp_path).version != ps.version


def test_rules_without_tests_are_lint_warnings(tmp_path: Path) -> None:
    policy_file(tmp_path, "p.yaml", "- id: T\n  action: flag\n  tests: [{text: x, expect: flag}]\n- id: U\n  action: flag")
    ps = load_policy_dir(tmp_path)
    assert ps.rules_without_tests == [f"{tmp_path / 'p.yaml'}:7: rule U has no tests"]


def test_load_single_file_uses_its_lexicons(tmp_path: Path) -> None:
    write(tmp_path, "lexicons/w.txt", "alpha\n")
    f = policy_file(tmp_path, "a.yaml", "- {id: A, match: {keywords: {lexicon: w.txt}}, action: flag}")
    ps = load_policy_paths([f])
    assert set(ps.files) == {"a.yaml", "lexicons/w.txt"}
    with pytest.raises(PolicyLoadError) as info:
        load_policy_paths([tmp_path / "missing.yaml"])
    assert info.value.errors == [f"{tmp_path / 'missing.yaml'}: no such file or directory"]


def test_shipped_policies_load_with_every_rule_tested() -> None:
    ps = load_policy_dir(Path(__file__).resolve().parents[1] / "policies")
    assert ps.rules_without_tests == []
    assert {"recording.yaml", "pii.yaml", "market-conduct.yaml", "attachments.yaml", "china-market-conduct.yaml",
            "lexicons/market-conduct.txt"} == set(ps.files)


def test_several_paths_form_one_set(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    policy_file(one, "a.yaml", "- {id: A, action: flag}")
    policy_file(two, "a.yaml", "- {id: B, action: flag}")
    ps = load_policy_paths([one, two])
    assert [r.id for r in ps.rules] == ["A", "B"]
    assert set(ps.files) == {f"{one}/a.yaml", f"{two}/a.yaml"}
    policy_file(two, "b.yaml", "- {id: A, action: block}")
    with pytest.raises(PolicyLoadError) as info:
        load_policy_paths([one, two])
    assert info.value.errors == [f"{two / 'b.yaml'}:4: duplicate rule id 'A' (first defined at {one / 'a.yaml'}:4)"]


def test_empty_list_is_an_error(tmp_path: Path) -> None:
    policy_file(tmp_path, "p.yaml", "- id: R\n  match: {keywords: {list: none}}\n  action: flag", lists="none: []")
    assert load_errors(tmp_path) == [f"{tmp_path / 'p.yaml'}:7: list 'none' is empty"]
