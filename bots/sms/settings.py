"""The `network: sms` config block, read once with errors that name the setting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from bots.base import ChannelConfigError
from bots.webhooks.settings import refuse_unknown_settings, required_setting, timeout_setting


@dataclass(frozen=True)
class SmsSettings:
    account_sid: str
    auth_token: str
    from_number: str = ""
    messaging_service_sid: str = ""
    api_url: str = "https://api.twilio.com"
    path: str = ""
    webhook_url: str = ""
    max_segments: int = 10
    timeout: float = 30.0

    @staticmethod
    def parse(name: str, settings: Mapping[str, Any]) -> SmsSettings:
        refuse_unknown_settings(name, settings, SmsSettings)
        from_number = str(settings.get("from_number") or "")
        service = str(settings.get("messaging_service_sid") or "")
        if not from_number and not service:
            raise ChannelConfigError(f"channel {name}: set `from_number` (your Twilio number, +E.164) "
                                     "or `messaging_service_sid` (MG…)", setting="from_number")
        raw_max = settings.get("max_segments", 10)
        if isinstance(raw_max, bool) or not isinstance(raw_max, int) or not 1 <= raw_max <= 10:
            raise ChannelConfigError(f"channel {name}: `max_segments` must be a whole number from 1 to 10 "
                                     "(Twilio concatenates at most 10 parts reliably)", setting="max_segments")
        return SmsSettings(
            account_sid=required_setting(name, settings, "account_sid"),
            auth_token=required_setting(name, settings, "auth_token"),
            from_number=from_number,
            messaging_service_sid=service,
            api_url=str(settings.get("api_url") or "https://api.twilio.com").rstrip("/"),
            path=str(settings.get("path") or f"/webhooks/{name}"),
            webhook_url=str(settings.get("webhook_url") or "").rstrip("/"),
            max_segments=raw_max,
            timeout=timeout_setting(name, settings, 30.0),
        )
