"""The `network: slack` config block, read once with errors that name the setting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from bots.base import ChannelConfigError
from bots.webhooks.settings import refuse_unknown_settings, required_setting, timeout_setting


@dataclass(frozen=True)
class SlackSettings:
    bot_token: str
    signing_secret: str
    channel: str
    api_url: str = "https://slack.com/api/"
    path: str = ""
    file_hosts: tuple[str, ...] = ("files.slack.com",)
    timeout: float = 30.0

    @staticmethod
    def parse(name: str, settings: Mapping[str, Any]) -> SlackSettings:
        refuse_unknown_settings(name, settings, SlackSettings)
        channel = required_setting(name, settings, "channel")
        if not channel[:1] in ("C", "G") or not channel.isalnum():
            raise ChannelConfigError(f"channel {name}: `channel` must be a Slack channel id such as C0123ABCD "
                                     "(channel details → About → Channel ID), not a #name", setting="channel")
        api_url = str(settings.get("api_url") or "https://slack.com/api/")
        hosts = settings.get("file_hosts", ["files.slack.com"])
        if not isinstance(hosts, (list, tuple)) or not all(isinstance(h, str) for h in hosts):
            raise ChannelConfigError(f"channel {name}: `file_hosts` must be a list of host names", setting="file_hosts")
        return SlackSettings(
            bot_token=required_setting(name, settings, "bot_token"),
            signing_secret=required_setting(name, settings, "signing_secret"),
            channel=channel,
            api_url=api_url if api_url.endswith("/") else api_url + "/",
            path=str(settings.get("path") or f"/slack/{name}/events"),
            file_hosts=tuple(hosts),
            timeout=timeout_setting(name, settings, 30.0),
        )
