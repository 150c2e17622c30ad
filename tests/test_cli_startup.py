"""`relay` starts light: `relay --help` lists every verb without importing any command module or
their heavy dependencies (aiohttp, the evidence exporters, the backtester), and a verb imports only
its own module. Checked in a fresh interpreter, since this test process has imported them already."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import relay.commands
from relay.cli import main
from relay.commands import VERBS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("aiohttp", "relay.evidence", "relay.backtest", "relay.admin", "relay.app", "relay.journal")

# Runs `relay ARGS` through relay.cli.main, then prints (last line) which modules it imported.
PROBE = """
import json, sys
from relay.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def probe(*args: str) -> tuple[str, dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.stderr == "", result.stderr
    *out, last = result.stdout.splitlines()
    return "\n".join(out), json.loads(last)


def imported(modules: list[str], prefix: str) -> list[str]:
    return [m for m in modules if m == prefix or m.startswith(prefix + ".")]


def test_top_level_help_imports_no_command_module_nor_heavy_dependency() -> None:
    out, seen = probe("--help")
    assert seen["code"] == 0
    assert imported(seen["modules"], "relay.commands") == ["relay.commands"]
    for heavy in HEAVY:
        assert imported(seen["modules"], heavy) == [], heavy
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("    ") and not line.startswith("     ")]
    assert listed == list(VERBS)


def test_review_list_help_imports_only_the_review_module_and_no_http_client() -> None:
    out, seen = probe("review", "list", "--help")
    assert seen["code"] == 0
    assert out.startswith("usage: relay review list [-h] [--config CONFIG] [--json]")
    assert imported(seen["modules"], "relay.commands") == [
        "relay.commands", "relay.commands.common", "relay.commands.compliance_common", "relay.commands.review"]
    for heavy in ("aiohttp", "relay.backtest", "relay.app", "relay.journal"):
        assert imported(seen["modules"], heavy) == [], heavy


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_builds_its_arguments_and_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: relay {verb} [-h]")
    assert out != argparse.ArgumentParser(prog=f"relay {verb}").format_help()  # its setup added something


def test_an_unknown_verb_is_a_clear_error_listing_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["nosuch"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument COMMAND: invalid choice: 'nosuch' (choose from " + ", ".join(f"'{v}'" for v in VERBS) + ")" in err


def test_every_setup_function_in_the_commands_package_is_in_the_verb_table() -> None:
    """A module's new `setup_*` with no row in VERBS would never be reachable from `relay`."""
    found = set()
    for info in pkgutil.iter_modules(relay.commands.__path__):
        module = importlib.import_module(f"relay.commands.{info.name}")
        found |= {f"{info.name}:{name}" for name, fn in vars(module).items()
                  if (name == "setup" or name.startswith("setup_")) and inspect.isfunction(fn)
                  and fn.__module__ == module.__name__}
    assert found == {verb.setup for verb in VERBS.values()}
