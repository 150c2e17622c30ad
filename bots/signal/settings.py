"""The `network: signal` config block, read once with errors that name the setting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from bots.base import ChannelConfigError
from bots.webhooks.settings import refuse_unknown_settings, required_setting, timeout_setting


@dataclass(frozen=True)
class SignalSettings:
    account: str
    host: str = "127.0.0.1"
    port: int = 7583
    timeout: float = 30.0
    max_backoff: float = 30.0

    @staticmethod
    def parse(name: str, settings: Mapping[str, Any]) -> SignalSettings:
        refuse_unknown_settings(name, settings, SignalSettings)
        account = required_setting(name, settings, "account")
        if not account.startswith("+") or not account[1:].isdigit():
            raise ChannelConfigError(f"channel {name}: `account` must be the registered number in +E.164 form "
                                     "(the -a of signal-cli)", setting="account")
        port = settings.get("port", 7583)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ChannelConfigError(f"channel {name}: `port` must be a TCP port (signal-cli daemon --tcp HOST:PORT)",
                                     setting="port")
        try:
            backoff = float(settings.get("max_backoff", 30.0))
        except (TypeError, ValueError):
            raise ChannelConfigError(f"channel {name}: `max_backoff` must be a number of seconds",
                                     setting="max_backoff") from None
        return SignalSettings(account=account, host=str(settings.get("host") or "127.0.0.1"), port=port,
                              timeout=timeout_setting(name, settings, 30.0), max_backoff=backoff)
