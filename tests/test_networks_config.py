"""The commented-out SMS, Slack and Signal blocks of config.example.yaml, uncommented, are a
valid config whose channels the adapters accept (so the example cannot drift from the code)."""

from __future__ import annotations

from pathlib import Path

import yaml

from bots.base import load_factory
from relay.config import config_from_dict
from tests.webhook_support import Host

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = {"sms": "client", "slack": "staff", "signal": "client"}
ENV = {"TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": "token",
       "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "secret"}


def uncommented_example() -> dict[str, object]:
    lines: list[str] = []
    inside = False
    for line in (ROOT / "config.example.yaml").read_text().splitlines():
        if any(line.startswith(f"# --- {name} ---") for name in BLOCKS):
            inside = True
        elif inside and line.startswith("  #   "):
            line = "    " + line[len("  #   "):]
        elif inside and any(line.startswith(f"  # {name}:") for name in BLOCKS):
            line = "  " + line[len("  # "):]
        elif inside and not line.startswith("  #"):
            inside = False
        lines.append(line)
    data = yaml.safe_load("\n".join(lines))
    data["desks"]["advisors"]["clients"] += [n for n, side in BLOCKS.items() if side == "client"]
    return data


def test_example_blocks_make_working_channels() -> None:
    cfg = config_from_dict(uncommented_example(), env=ENV, base=ROOT)
    host = Host()
    for name, side in BLOCKS.items():
        block = cfg.channels[name]
        assert block.network == name and block.side == side
        channel = load_factory(block.network)(name, dict(block.settings), host.ctx(name, side=side))
        assert channel.name == name
    paths = {r.resource.canonical for r in host.app.router.routes() if r.resource is not None}
    assert {"/webhooks/sms", "/webhooks/sms/status", "/slack/slack/events"} <= paths
