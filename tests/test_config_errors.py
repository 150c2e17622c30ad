"""Config mistakes are `file:line: setting: reason` lines, with a near miss suggested, found
before anything is written (no data directory, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from relay.app import RelayApp
from relay.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
data_dir: ./data
listen: {host: 127.0.0.1, port: 0}
policies: {dir: POLICIES}
channels:
  webchat:
    network: webchat
    side: client
  webdesk:
    network: webdesk
    side: staff
employees:
  alice: {name: Alice, staff: {channel: webdesk, address: alice}}
desks:
  advisors: {clients: [webchat], members: [alice]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.yaml"
    path.write_text(text.replace("POLICIES", str(ROOT / "policies")))
    return path


def run(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "RELAY_TEST_KEY"} | {"PYTHONPATH": str(ROOT)} | (env or {})
    return subprocess.run([sys.executable, "-m", "relay.cli", "run", "--config", str(path)], cwd=path.parent,
                          env=full, capture_output=True, text=True, timeout=60)


def test_unknown_channel_setting_is_a_line_with_a_suggestion_before_anything_is_written(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("    side: client\n", "    side: client\n    welcom: Hello\n"))
    out = run(path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert f"{path}:8: channels.webchat.welcom: unknown setting(s) welcom" in out.stderr
    assert "did you mean `welcome`?" in out.stderr
    assert not (tmp_path / "data").exists()


def test_unknown_network_is_a_line_with_a_suggestion_before_anything_is_written(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("network: webdesk", "network: webdsk"))
    out = run(path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert f"{path}:9: channels.webdesk.network: unknown network 'webdsk'" in out.stderr
    assert "did you mean `webdesk`?" in out.stderr
    assert not (tmp_path / "data").exists()


async def test_every_bad_channel_block_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("    side: client\n", "    side: client\n    pth: /c\n")
                 .replace("network: webdesk", "network: nosuchnet"))
    with pytest.raises(ConfigError) as caught:
        await RelayApp.start(load_config(path))
    assert [p.split(": ", 2)[:2] for p in caught.value.problems] == [
        [f"{path}:8", "channels.webchat.pth"], [f"{path}:10", "channels.webdesk.network"]]
    assert "did you mean `path`?" in caught.value.problems[0]
    assert not (tmp_path / "data").exists()


def test_unknown_top_level_and_section_keys_name_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "outbx: {base_delay: 1}\nlimits: {max_attachment_byte: 10}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        f"{path}:15: outbx: unknown setting; did you mean `outbox`?",
        f"{path}:16: limits.max_attachment_byte: unknown setting; did you mean `max_attachment_bytes`?",
    ]


def test_a_wrong_name_in_a_reference_suggests_the_near_one(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("members: [alice]", "members: [alicee]")
                 .replace("channel: webdesk,", "channel: webdsk,"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        f"{path}:12: employees.alice.staff.channel: no channel named 'webdsk'; did you mean `webdesk`?",
        f"{path}:14: desks.advisors.members[0]: no employee named 'alicee'; did you mean `alice`?",
    ]


def test_missing_environment_variable_reads_file_setting_reason(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "journal: {hmac_key: '${RELAY_TEST_KEY}'}\n")
    out = run(path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"relay: {path}:15: journal.hmac_key: environment variable RELAY_TEST_KEY is not set "
        "(export it before starting relay)"]
    assert not (tmp_path / "data").exists()
