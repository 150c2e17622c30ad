"""The commented-out WhatsApp and WeChat blocks of config.example.yaml, uncommented, are a
valid config whose channels the adapters accept (so the example cannot drift from the code)."""

from __future__ import annotations

from pathlib import Path

import yaml

from bots.base import load_factory
from relay.config import config_from_dict
from tests.webhook_support import Host

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    "WHATSAPP_PHONE_NUMBER_ID": "1122334455667", "WHATSAPP_ACCESS_TOKEN": "EAAG-token",
    "WHATSAPP_APP_SECRET": "app-secret", "WHATSAPP_VERIFY_TOKEN": "verify",
    "WECHAT_APP_ID": "wx49f0ab532d5d035a", "WECHAT_APP_SECRET": "secret", "WECHAT_TOKEN": "token",
    "WECHAT_ENCODING_AES_KEY": "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
}


def uncommented_example() -> dict[str, object]:
    lines: list[str] = []
    inside = False
    for line in (ROOT / "config.example.yaml").read_text().splitlines():
        if line.startswith(("# --- whatsapp", "# --- wechat")):
            inside = True
        elif inside and line.startswith("  #   "):
            line = "    " + line[len("  #   "):]
        elif inside and line.startswith(("  # whatsapp:", "  # wechat:")):
            line = "  " + line[len("  # "):]
        elif inside and not line.startswith("  #"):
            inside = False
        lines.append(line)
    data = yaml.safe_load("\n".join(lines))
    data["desks"]["advisors"]["clients"] += ["whatsapp", "wechat"]
    return data


def test_example_blocks_make_working_channels() -> None:
    cfg = config_from_dict(uncommented_example(), env=ENV, base=ROOT)
    host = Host()
    for name in ("whatsapp", "wechat"):
        block = cfg.channels[name]
        channel = load_factory(block.network)(name, dict(block.settings), host.ctx(name))
        assert channel.name == name
    paths = {r.resource.canonical for r in host.app.router.routes() if r.resource is not None}
    assert {"/webhooks/whatsapp", "/webhooks/wechat"} <= paths
