"""The Telegram block in config.example.yaml is valid once uncommented."""

from __future__ import annotations

from pathlib import Path

import yaml

from bots.telegram import create
from relay.config import config_from_dict
from telegram_support import make_ctx

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_telegram_block_loads_and_builds() -> None:
    lines = []
    in_block = False
    for line in (ROOT / "config.example.yaml").read_text().splitlines():
        if line.startswith("# --- "):
            in_block = line.startswith("# --- telegram ---")
        elif in_block and line.startswith(("  # telegram-clients:", "  # telegram-staff:", "  #   ")):
            line = "  " + line[4:]
        lines.append(line)
    data = yaml.safe_load("\n".join(lines))
    data["desks"]["advisors"]["clients"].append("telegram-clients")
    data["employees"]["tina"] = {"name": "Tina", "staff": {"channel": "telegram-staff", "address": "123456789"}}
    env = {"TELEGRAM_TOKEN": "1:client", "TELEGRAM_STAFF_TOKEN": "2:staff"}
    cfg = config_from_dict(data, base=ROOT, env=env)
    clients = cfg.channels["telegram-clients"]
    assert clients.welcome and clients.side == "client"
    client = create("telegram-clients", clients.settings, make_ctx("telegram-clients", "client"))
    assert (client.cfg.token, client.cfg.mode, client.cfg.webhook_secret, client.cfg.poll_timeout) == ("1:client", "polling", "", 30.0)
    staff = cfg.channels["telegram-staff"]
    channel = create("telegram-staff", staff.settings, make_ctx("telegram-staff", "staff"))
    assert (channel.cfg.token, channel.cfg.side, channel.cfg.staff_group) == ("2:staff", "staff", -1001234567890)
    assert cfg.employee_by_address("telegram-staff", "123456789") is not None
