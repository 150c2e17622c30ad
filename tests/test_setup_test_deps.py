"""scripts/setup-test-deps, which `make test` and .ci/run both call: silent and without apt when
everything is installed; otherwise one `apt-get update`, one install of exactly what is
missing, and the system services the install started stopped again. apt-get and service are
replaced by recorders on PATH (the script's own logic runs for real)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "setup-test-deps"


def recorder(bin_dir: Path, name: str, log: Path) -> None:
    tool = bin_dir / name
    tool.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
    tool.chmod(0o755)


def test_make_test_and_ci_call_the_script() -> None:
    makefile = (ROOT / "Makefile").read_text()
    test_target = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/setup-test-deps" in test_target
    assert "scripts/setup-test-deps" in (ROOT / ".ci" / "run").read_text()


def test_nothing_is_installed_when_everything_is_present(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("apt-get", "service", "systemctl", "sudo"):
        recorder(bin_dir, name, log)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    out = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""
    assert not log.exists(), log.read_text()


def test_missing_packages_are_installed_with_one_update_and_their_services_stopped(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("bash", "id", "env", "sh"):
        found = shutil.which(name)
        assert found, name
        (bin_dir / name).symlink_to(found)
    real_python = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"], capture_output=True,
                                 text=True, check=True).stdout.strip()  # not a pyenv shim: it needs a full PATH
    (bin_dir / "python3").symlink_to(real_python)
    for name in ("apt-get", "service"):
        recorder(bin_dir, name, log)
    empty = tmp_path / "no-postgresql"
    empty.mkdir()
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "RELAY_PG_LIB": str(empty)}
    out = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    if os.getuid() != 0:
        assert out.returncode == 1 and "apt-get install -y prosody chromium postgresql openssl" in out.stderr
        return
    assert out.returncode == 0, out.stderr
    calls = log.read_text().splitlines()
    assert "installing prosody chromium postgresql openssl" in out.stderr
    assert calls == [
        "apt-get update -q",
        "apt-get install -y -q prosody chromium postgresql openssl",
        "service prosody stop",
        "service postgresql stop",
    ]
