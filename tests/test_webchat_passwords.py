"""scrypt password hashes and `relay hash-password`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from relay.passwords import hash_password, verify_password

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip_and_wrong_password() -> None:
    stored = hash_password("correct horse")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("", stored)


def test_format_and_fresh_salt() -> None:
    a, b = hash_password("pw"), hash_password("pw")
    assert a != b
    scheme, n, r, p, salt, digest = a.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(salt) == 24 and len(digest) == 44


def test_unicode_password() -> None:
    stored = hash_password("pässwörd 密码")
    assert verify_password("pässwörd 密码", stored)
    assert not verify_password("passwort 密码", stored)


@pytest.mark.parametrize("stored", [
    "", "PLACEHOLDER", "scrypt$16384$8$1$abc", "bcrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",
    "scrypt$x$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
    "scrypt$16383$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
    "scrypt$1073741824$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
    "scrypt$16384$8$1$not base64!$" + "A" * 44,
    "scrypt$16384$8$1$$" + "A" * 44,
    "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",
])
def test_malformed_hash_is_false_not_an_error(stored: str) -> None:
    assert verify_password("anything", stored) is False


def test_tampered_hash_fails() -> None:
    stored = hash_password("pw")
    head, digest = stored.rsplit("$", 1)
    flipped = ("B" if digest[0] == "A" else "A") + digest[1:]
    assert not verify_password("pw", f"{head}${flipped}")


def run_cli(stdin: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "relay.cli", "hash-password"], input=stdin, text=True,
                          capture_output=True, cwd=ROOT, env=env, timeout=60)


def test_cli_reads_stdin_and_prints_a_verifiable_hash() -> None:
    result = run_cli("s3cret pass\n")
    assert result.returncode == 0, result.stderr
    assert verify_password("s3cret pass", result.stdout.strip())
    assert "s3cret" not in result.stdout


def test_cli_refuses_an_empty_password() -> None:
    result = run_cli("")
    assert result.returncode == 1
    assert result.stdout == "" and "empty password" in result.stderr


def test_example_config_demo_passwords() -> None:
    config = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    employees = config["employees"]
    assert verify_password("alice-demo", employees["alice"]["password_hash"])
    assert verify_password("bob-demo", employees["bob"]["password_hash"])
    assert not verify_password("alice-demo", employees["bob"]["password_hash"])
