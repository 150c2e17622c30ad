"""`relay policy check|test|eval` as a user runs them: subprocesses, exit codes, output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.policy_support import policy_file, write

ROOT = Path(__file__).resolve().parents[1]


def relay(*args: str, stdin: str | bytes = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "relay.cli", "policy", *args],
        cwd=ROOT, env=env, input=stdin.encode() if isinstance(stdin, str) else stdin, capture_output=True, timeout=60,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode("utf-8"), result.stderr.decode("utf-8")
    )


def test_check_shipped_policies_ok() -> None:
    result = relay("check", "policies")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: 6 files, 14 rules, version ")
    assert result.stderr == ""


def test_check_reports_errors_with_exit_2(tmp_path: Path) -> None:
    policy_file(tmp_path, "p.yaml", "- id: R\n  match: {regex: '(x'}\n  action: flag\n- {id: R, action: nope}")
    result = relay("check", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'p.yaml'}:7: rule R: action: 'nope' is not one of: allow, flag, redact, quarantine, block, disclaimer"
    ]
    write(tmp_path, "p.yaml", "schema: relay-policy/v1\npolicy: {id: p}\nrules:\n  - id: R\n    match: {regex: '(x'}\n    action: flag\n")
    result = relay("check", str(tmp_path / "p.yaml"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"{tmp_path / 'p.yaml'}:5: invalid regex '(x': missing ): (x"]


def test_check_warns_on_untested_rules_and_json(tmp_path: Path) -> None:
    policy_file(tmp_path, "p.yaml", "- {id: U, action: flag}")
    result = relay("check", str(tmp_path))
    assert result.returncode == 0
    assert result.stderr.splitlines() == [f"warning: {tmp_path / 'p.yaml'}:4: rule U has no tests"]
    result = relay("check", "--json", str(tmp_path))
    report = json.loads(result.stdout)
    assert result.returncode == 0
    assert report["ok"] is True and report["errors"] == [] and len(report["version"]) == 64
    assert report["warnings"] == [f"{tmp_path / 'p.yaml'}:4: rule U has no tests"]
    result = relay("check", "--json", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert json.loads(result.stdout) == {
        "ok": False, "errors": [f"{tmp_path / 'missing'}: no such file or directory"], "warnings": [], "version": None
    }


def test_test_shipped_policies_pass() -> None:
    result = relay("test", "policies/")
    assert result.returncode == 0, result.stdout
    last = result.stdout.splitlines()[-1]
    passed, failed = last.split(", ")
    assert failed == "0 failed" and int(passed.split()[0]) >= 40 and passed.endswith(" passed")


def test_test_reports_failures(tmp_path: Path) -> None:
    policy_file(
        tmp_path,
        "p.yaml",
        """- id: K
  match: {keywords: [alpha]}
  action: flag
  tests:
    - {text: "alpha", expect: flag}
    - {text: "beta", expect: flag}
    - {text: "alpha", expect: block}""",
    )
    result = relay("test", str(tmp_path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == "1 passed, 2 failed"
    assert lines[0] == (
        f"FAIL {tmp_path / 'p.yaml'}:9: rule K test #2: expected flag, got allow "
        "for input {text='beta', direction=inbound, channel=webchat}"
    )
    assert "rule K test #3: expected block, got flag" in lines[1]
    data = json.loads(relay("test", "--json", str(tmp_path)).stdout)
    assert data["passed"] == 1 and data["failed"] == 2 and data["failures"][0]["text"] == "beta"


def test_eval_json_lines() -> None:
    lines = [
        {"direction": "outbound", "channel": "webchat", "text": "card 4111 1111 1111 1111", "first_in_conversation": True},
        {"direction": "inbound", "channel": "webchat", "text": "hello"},
        "not json",
        {"direction": "sideways", "channel": "webchat", "text": "x"},
        {"direction": "inbound", "channel": "webchat", "text": "see file",
         "attachments": [{"name": "setup.exe", "mime": "application/octet-stream", "size": 10}]},
        {"direction": "inbound", "channel": "webchat", "text": "x", "attachments": [{"name": "a.pdf", "size": "big"}]},
        {"direction": "inbound", "channel": "webchat", "text": "4111111111111111", "sender_group": "payments-ops"},
    ]
    stdin = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n\n"
    result = relay("eval", "--policies", "policies", stdin=stdin)
    assert result.returncode == 1
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == 7
    version = out[0]["policy_version"]
    assert len(version) == 64
    assert out[0] == {
        "action": "redact",
        "rules": ["PII-001", "REC-001"],
        "text": "This conversation is recorded for regulatory purposes.\ncard [REDACTED]",
        "policy_version": version,
        "review": False,
    }
    assert out[1] == {"action": "allow", "rules": [], "text": "hello", "policy_version": version, "review": False}
    assert out[2]["error"].startswith("line 3: invalid JSON")
    assert out[3] == {"error": "line 4: 'direction' must be inbound or outbound, not 'sideways'"}
    assert out[4]["action"] == "block" and out[4]["rules"] == ["ATT-001"]
    assert out[5] == {"error": "line 6: attachments[0].size must be a non-negative integer (bytes)"}
    assert out[6]["action"] == "allow"
    assert result.stderr.splitlines() == [
        f"relay: {out[2]['error']}",
        f"relay: {out[3]['error']}",
        f"relay: {out[5]['error']}",
    ]


def test_eval_all_good_exits_0_and_bad_policies_exit_2(tmp_path: Path) -> None:
    stdin = '{"direction":"inbound","channel":"c","text":"an insider"}\n{"direction":"inbound","channel":"c","text":"\\ud800 内幕消息"}\n'
    result = relay("eval", "--policies", "policies", stdin=stdin)
    assert result.returncode == 0, result.stderr
    first, second = [json.loads(line) for line in result.stdout.splitlines()]
    assert first["action"] == "quarantine" and first["review"] is True
    assert second["rules"] == ["MC-004"] and second["text"] == "\ud800 内幕消息"
    write(tmp_path, "p.yaml", "nope: [\n")
    result = relay("eval", "--policies", str(tmp_path), stdin="")
    assert result.returncode == 2 and result.stderr.startswith(f"{tmp_path / 'p.yaml'}:2: YAML syntax error")


def test_eval_invalid_utf8_line_is_reported_not_fatal() -> None:
    stdin = b'{"direction":"inbound","channel":"c","text":"\xff"}\n{"direction":"inbound","channel":"c","text":"ok"}\n'
    result = relay("eval", "--policies", "policies", stdin=stdin)
    assert result.returncode == 1
    first, second = [json.loads(line) for line in result.stdout.splitlines()]
    assert first == {"error": "line 1: not valid UTF-8 at byte 46"}
    assert second["action"] == "allow"
